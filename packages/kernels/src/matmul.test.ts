import { InvalidArgumentError, Stream } from '@x/core';
import { afterEach, describe, expect, it } from 'vitest';
import { matmul } from './matmul.js';
import { Arena, expectClose, fromBf16, randomF32, rng, toBf16 } from './test-util.js';

const stream = Stream.create('cpu', { recordOps: true });
const arena = new Arena();
afterEach(async () => {
  await stream.synchronize();
  arena.dispose();
});

function ref(
  a: Float32Array,
  w: Float32Array,
  m: number,
  n: number,
  k: number,
  bias?: Float32Array,
) {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += a[i * k + t]! * w[j * k + t]!;
      out[i * n + j] = s + (bias?.[j] ?? 0);
    }
  }
  return out;
}

describe('matmul', () => {
  const cases: Array<[number, number, number, 'f32' | 'bf16', boolean]> = [
    [1, 1, 1, 'f32', false],
    [1, 67, 129, 'f32', true],
    [1, 300, 64, 'bf16', false],
    [2, 5, 7, 'bf16', true],
    [4, 129, 33, 'f32', false],
    [17, 70, 200, 'bf16', true],
    [64, 256, 96, 'f32', true],
  ];
  for (const [m, n, k, wd, withBias] of cases) {
    it(`[${m}, ${k}] · [${n}, ${k}]ᵀ with ${wd} weights${withBias ? ' and bias' : ''}`, async () => {
      const rand = rng(m * 1000 + n + k);
      const a = randomF32(m * k, rand);
      let w = randomF32(n * k, rand);
      const wT = wd === 'bf16' ? arena.tensor('bf16', [n, k], toBf16(w)) : arena.f32([n, k], w);
      if (wd === 'bf16') w = fromBf16(toBf16(w));
      const bias = withBias ? randomF32(n, rand) : undefined;
      const out = arena.f32([m, n]);
      matmul(stream, out, arena.f32([m, k], a), wT, bias ? { bias: arena.f32([n], bias) } : {});
      await stream.synchronize();
      expectClose(arena.read(out), ref(a, w, m, n, k, bias), 1e-4, 1e-5);
      expect(stream.completedOps()).toContain('kernels.matmul');
    });
  }

  it('writes into a strided slice of a wider output (gate/up halves)', async () => {
    const rand = rng(9);
    const [m, n, k] = [5, 12, 40];
    const a = randomF32(m * k, rand);
    const w = randomF32(n * k, rand);
    const wide = arena.f32([m, 2 * n]);
    matmul(stream, wide.slice(1, n, 2 * n), arena.f32([m, k], a), arena.f32([n, k], w));
    await stream.synchronize();
    const got = arena.read(wide);
    const want = ref(a, w, m, n, k);
    for (let i = 0; i < m; i++) {
      expectClose(
        got.subarray(i * 2 * n + n, (i + 1) * 2 * n),
        want.subarray(i * n, (i + 1) * n),
        1e-4,
        1e-5,
      );
      expect(got.subarray(i * 2 * n, i * 2 * n + n).every(Number.isNaN)).toBe(true);
    }
  });

  it('names the tensor and the expected shape on a mismatch', () => {
    const out = arena.f32([2, 3]);
    expect(() => matmul(stream, out, arena.f32([2, 4]), arena.f32([3, 5]))).toThrow(
      /Expected \[\*, 4\] for w\.shape but received "?\[3, 5\]/,
    );
    expect(() =>
      matmul(stream, out, arena.f32([2, 4]), arena.i32([3, 4], new Int32Array(12))),
    ).toThrow(InvalidArgumentError);
  });

  it('names the tensor and its strides when its rows are not contiguous', () => {
    const out = arena.f32([3, 3]);
    const w = arena.f32([3, 4]);
    // A transposed view: its last stride is not 1.
    expect(() => matmul(stream, out, arena.f32([4, 3]).transpose(0, 1), w)).toThrow(
      /Expected contiguous rows \(last stride 1\) for a\.strides but received "?\[1, 3\]/,
    );
    // Rows that overlap: a row stride shorter than a row.
    const a = arena.f32([3, 4]);
    const overlapping = new (a.constructor as typeof import('@x/core').Tensor)({
      ptr: a.ptr,
      dtype: 'f32',
      shape: [3, 4],
      strides: [2, 1],
      device: 'cpu',
    });
    expect(() => matmul(stream, out, overlapping, w)).toThrow(
      /Expected a row stride >= 4 for a\.strides but received "?\[2, 1\]/,
    );
    expect(() => matmul(stream, out, arena.f32([3, 1, 4]), w)).toThrow(
      /Expected \[\*, \*\] for a\.shape but received "?\[3, 1, 4\]/,
    );
  });

  it('refuses memory x does not manage', () => {
    const t = arena.f32([2, 2]);
    const bogus = new (t.constructor as typeof import('@x/core').Tensor)({
      ptr: 0x1000n,
      dtype: 'f32',
      shape: [2, 2],
      device: 'cpu',
    });
    let err: unknown;
    try {
      matmul(stream, t, bogus, t);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toMatch(/^a: pointer 0x1000\+16 is not memory x manages/);
  });
});
