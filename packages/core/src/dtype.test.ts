import { describe, expect, it } from 'vitest';
import { assertDType, DTYPES, dtypeSize, parseDType } from './dtype.js';
import { InvalidArgumentError } from './errors.js';

describe('dtype', () => {
  it('knows the size of every dtype', () => {
    expect(Object.fromEntries(Object.entries(DTYPES).map(([k, v]) => [k, v.bytes]))).toEqual({
      f32: 4,
      f16: 2,
      bf16: 2,
      i32: 4,
      i64: 8,
      u8: 1,
    });
    expect(dtypeSize('bf16')).toBe(2);
  });

  it('parses Hugging Face and torch names', () => {
    expect(parseDType('bfloat16')).toBe('bf16');
    expect(parseDType('torch.float16')).toBe('f16');
    expect(parseDType('float32')).toBe('f32');
    expect(() => parseDType('float8')).toThrow(InvalidArgumentError);
  });

  it('rejects unknown dtypes with the list of valid ones', () => {
    expect(() => assertDType('dtype', 'f64')).toThrow(
      /Expected a dtype \(f32, f16, bf16, i32, i64, u8\) for dtype but received "f64"/,
    );
  });
});
