import { describe, expect, it } from 'vitest';
import { convertElements, f32BitsToHalf, halfToFloat } from './convert.js';

const bitsOf = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0]!;

describe('convertElements', () => {
  it('rounds f32 to f16 to nearest even, with subnormals, overflow and NaN', () => {
    const cases: Array<[number, number]> = [
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65520, 0x7c00], // halfway to the next binade rounds up to inf
      [1e6, 0x7c00],
      [2 ** -24, 0x0001],
      [2 ** -26, 0x0000],
      [1 + 2 ** -11, 0x3c00], // a tie rounds to even (down)
      [1 + 3 * 2 ** -11, 0x3c02], // a tie rounds to even (up)
      [0.1, 0x2e66],
    ];
    for (const [x, h] of cases) expect(f32BitsToHalf(bitsOf(x))).toBe(h);
    expect(halfToFloat(f32BitsToHalf(bitsOf(Number.NaN)))).toBeNaN();
  });

  it('converts between the checkpoint and device dtypes exactly where the value fits', () => {
    const values = new Float32Array([0.5, -3.25, 1024, 2 ** -14]);
    const f16 = convertElements(new Uint8Array(values.buffer), 'F32', 'f16');
    const back = convertElements(f16, 'F16', 'f32');
    expect([...new Float32Array(back.buffer, back.byteOffset, 4)]).toEqual([...values]);
    const bf16 = convertElements(new Uint8Array(values.buffer), 'F32', 'bf16');
    const viaBf16 = convertElements(bf16, 'BF16', 'f16');
    expect([...new Uint16Array(viaBf16.buffer)]).toEqual([...new Uint16Array(f16.buffer)]);
    expect(convertElements(f16, 'F16', 'f16')).toBe(f16);
  });
});
