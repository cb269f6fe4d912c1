// HostBuffer.tensor: a view of host memory on the device it is pinned for ("cpu" here), which
// streams and kernels of that device address in place.
import { describe, expect, it } from 'vitest';
import { DisposedError, InvalidArgumentError } from './errors.js';
import { HostBuffer } from './host-buffer.js';
import { Stream } from './stream.js';

describe('HostBuffer.tensor', () => {
  it('views the bytes from an offset on the buffer device; a stream writes through it', async () => {
    const buf = HostBuffer.alloc(64);
    buf.bytes.fill(0);
    const t = buf.tensor('i32', [2, 3], 16);
    expect(t.device.name).toBe('cpu');
    expect(t.ptr).toBe(buf.ptr + 16n);
    expect(t.shape).toEqual([2, 3]);
    const s = Stream.create('cpu');
    s.fill(t.ptr, t.numel * 4, 7, 4);
    await s.synchronize();
    const ints = new Int32Array(buf.buffer);
    expect(Array.from(ints.subarray(0, 4))).toEqual([0, 0, 0, 0]);
    expect(Array.from(ints.subarray(4, 10))).toEqual([7, 7, 7, 7, 7, 7]);
    expect(Array.from(ints.subarray(10))).toEqual(new Array(6).fill(0));
    s.dispose();
    buf.dispose();
  });

  it('refuses a view past the end, a misaligned offset and a disposed buffer', () => {
    const buf = HostBuffer.alloc(64);
    expect(() => buf.tensor('f32', [17])).toThrow(InvalidArgumentError);
    expect(() => buf.tensor('f32', [16], 4)).toThrow(/at most 60 bytes from offset 4/);
    expect(() => buf.tensor('i64', [1], 4)).toThrow(/a multiple of 8/);
    expect(() => buf.tensor('i32', [1], -4)).toThrow(InvalidArgumentError);
    expect(buf.tensor('u8', [64]).numel).toBe(64);
    expect(buf.tensor('f32', [0], 64).numel).toBe(0);
    buf.dispose();
    expect(() => buf.tensor('u8', [1])).toThrow(DisposedError);
  });
});
