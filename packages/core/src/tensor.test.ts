import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from './errors.js';
import { Tensor } from './tensor.js';

const base = 0x1000n;
const t = (shape: number[], dtype: 'f32' | 'bf16' | 'u8' = 'f32') =>
  new Tensor({ ptr: base, dtype, shape, device: 'cpu' });

describe('Tensor', () => {
  it('has contiguous row-major strides by default', () => {
    const x = t([2, 3, 4]);
    expect(x.strides).toEqual([12, 4, 1]);
    expect(x.numel).toBe(24);
    expect(x.byteLength).toBe(96);
    expect(x.isContiguous).toBe(true);
  });

  it('slices without copying: same memory, offset address', () => {
    const x = t([4, 8]);
    const s = x.slice(0, 1, 3);
    expect(s.shape).toEqual([2, 8]);
    expect(s.ptr).toBe(base + 8n * 4n);
    const c = x.slice(1, 2, 6);
    expect(c.shape).toEqual([4, 4]);
    expect(c.strides).toEqual([8, 1]);
    expect(c.ptr).toBe(base + 2n * 4n);
    expect(c.isContiguous).toBe(false);
    expect(x.slice(-1, -2).shape).toEqual([4, 2]);
  });

  it('selects an index and drops the dimension', () => {
    const x = t([3, 5]);
    const r = x.select(0, 2);
    expect(r.shape).toEqual([5]);
    expect(r.ptr).toBe(base + 10n * 4n);
    expect(() => x.select(0, 3)).toThrow(InvalidArgumentError);
  });

  it('reshapes contiguous tensors and infers one -1', () => {
    const x = t([2, 3, 4]);
    expect(x.reshape([6, -1]).shape).toEqual([6, 4]);
    expect(x.reshape([24]).ptr).toBe(base);
    expect(() => x.reshape([5, -1])).toThrow(/a shape with 24 elements/);
    expect(() => x.slice(2, 0, 2).reshape([12])).toThrow(/contiguous/);
  });

  it('views bytes as another dtype', () => {
    const x = t([2, 4], 'f32');
    const v = x.view('u8');
    expect(v.shape).toEqual([2, 16]);
    expect(v.strides).toEqual([16, 1]);
    expect(v.view('bf16').shape).toEqual([2, 8]);
    expect(() => t([3], 'u8').view('f32')).toThrow(InvalidArgumentError);
  });

  it('transposes as a strided view', () => {
    const x = t([2, 3]).transpose(0, 1);
    expect(x.shape).toEqual([3, 2]);
    expect(x.strides).toEqual([1, 3]);
    expect(x.isContiguous).toBe(false);
  });

  it('rejects bad descriptors with the field name', () => {
    expect(() => new Tensor({ ptr: base, dtype: 'f32', shape: [2, -1], device: 'cpu' })).toThrow(
      'Expected an integer >= 0 for shape[1] but received -1',
    );
    expect(
      () => new Tensor({ ptr: base, dtype: 'f32', shape: [2], device: 'tpu' as 'cpu' }),
    ).toThrow(/for device but received "tpu"/);
  });
});
