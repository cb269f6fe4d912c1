// indexCopy and copyWithIndexCopy on the CPU: the copies run in stream order (after work enqueued
// before them, before work enqueued after), runs of consecutive indices and scattered ones give the
// same result, bits are copied as they are, the index copy wins over the bulk copy where both
// write, and bad arguments are typed errors. The CUDA kernel is checked against
// the same expectations by packages/kernels/test/gpu/elementwise.gpu.mjs.
import { InvalidArgumentError, Stream, Tensor } from '@x/core';
import { afterEach, describe, expect, it } from 'vitest';
import { copyWithIndexCopy, indexCopy } from './index-copy.js';
import { Arena } from './test-util.js';

const stream = Stream.create('cpu');
const arena = new Arena();
afterEach(async () => {
  await stream.synchronize().catch(() => {});
  arena.dispose();
});

describe('indexCopy', () => {
  it('dst[dstIndex[k]] = src[srcIndex[k]], runs and scattered pairs alike, others untouched', async () => {
    const src = arena.i32([8], [10, 11, 12, 13, 14, 15, 16, 17]);
    const dst = arena.i32(
      [10],
      Array.from({ length: 10 }, () => -1),
    );
    // 0..2 <- 3..5 (one run, given out of order), 7 <- 0, 9 <- 7, 5 <- 6.
    indexCopy(stream, dst, [1, 0, 2, 7, 9, 5], src, [4, 3, 5, 0, 7, 6]);
    await stream.synchronize();
    expect([...arena.readI32(dst)]).toEqual([13, 14, 15, -1, -1, 16, -1, 10, -1, 17]);
  });

  it('copies 32-bit patterns exactly (f32 NaN payloads, denormals) and keeps stream order', async () => {
    const bits = Int32Array.from([0x7fc00001, 0x00000001, -1, 0x3f800000]);
    const src = arena.i32([4], bits);
    const dst = arena.f32([4]);
    // A delay holds the stream: the copy must not run before the write that precedes it.
    stream.delay(20);
    stream.copy(src.ptr, arena.i32([1], [0x00000005]).ptr, 4);
    indexCopy(stream, dst, [0, 1, 2, 3], src, [0, 1, 2, 3]);
    stream.copy(src.ptr + 4n, arena.i32([1], [99]).ptr, 4); // after the copy: not seen by it
    await stream.synchronize();
    expect([...new Int32Array(arena.read(dst).buffer, arena.read(dst).byteOffset, 4)]).toEqual([
      5, 1, -1, 0x3f800000,
    ]);
  });

  it('refuses bad indices, repeats, length mismatches and overlapping tensors', () => {
    const src = arena.i32([4], [1, 2, 3, 4]);
    const dst = arena.i32([4], [0, 0, 0, 0]);
    const bad = (f: () => void, field: RegExp) => {
      expect(f).toThrow(InvalidArgumentError);
      expect(f).toThrow(field);
    };
    bad(() => indexCopy(stream, dst, [4], src, [0]), /dstIndex\[0\]/);
    bad(() => indexCopy(stream, dst, [0], src, [-1]), /srcIndex\[0\]/);
    bad(() => indexCopy(stream, dst, [1, 1], src, [0, 2]), /not repeated/);
    bad(() => indexCopy(stream, dst, [0, 1], src, [0]), /srcIndex/);
    bad(() => indexCopy(stream, dst, [0], dst.slice(0, 1, 3), [0]), /overlap/);
    bad(() => indexCopy(stream, dst, [0], arena.f32([2, 2]).slice(1, 0, 1), [0]), /contiguous/);
  });
});

describe('copyWithIndexCopy', () => {
  it('copies every byte, then the indexed words inside dst take their fed values', async () => {
    // A step's staged inputs: ids [4] | positions [4]; rows 1 and 3 take fed ids.
    const src = arena.i32([8], [-1, 7, -1, -1, 20, 21, 22, 23]);
    const dst = arena.i32([8], new Array(8).fill(0x5a5a5a5a));
    const fed = arena.i32([4], [100, 101, 102, 103]);
    stream.delay(20); // the copy runs after what is enqueued before it
    copyWithIndexCopy(stream, dst, src, {
      dst: dst.slice(0, 0, 4),
      dstIndex: [3, 0],
      src: fed,
      srcIndex: [2, 1],
    });
    stream.copy(src.ptr, arena.i32([1], [99]).ptr, 4); // after the copy: not seen by it
    await stream.synchronize();
    expect([...arena.readI32(dst)]).toEqual([101, 7, -1, 102, 20, 21, 22, 23]);
    // Without an index it is a plain copy (any dtype of the same byte size).
    const bytes = arena.tensor('u8', [32]);
    copyWithIndexCopy(stream, bytes, src);
    await stream.synchronize();
    expect([...arena.readI32(bytes.view('i32'))]).toEqual([99, 7, -1, -1, 20, 21, 22, 23]);
  });

  it('refuses sizes, overlaps and index copies that reach outside dst', () => {
    const src = arena.i32([8], [1, 2, 3, 4, 5, 6, 7, 8]);
    const dst = arena.i32([8], new Array(8).fill(0));
    const fed = arena.i32([2], [9, 9]);
    const bad = (f: () => void, field: RegExp) => {
      expect(f).toThrow(InvalidArgumentError);
      expect(f).toThrow(field);
    };
    bad(() => copyWithIndexCopy(stream, dst, src.slice(0, 0, 4)), /32 bytes \(as dst\)/);
    bad(
      () => copyWithIndexCopy(stream, arena.tensor('u8', [6]), arena.tensor('u8', [6])),
      /multiple of 4/,
    );
    bad(() => copyWithIndexCopy(stream, dst.slice(0, 1, 5), dst.slice(0, 3, 7)), /overlap src/);
    const outside = arena.i32([2], [0, 0]);
    bad(
      () =>
        copyWithIndexCopy(stream, dst, src, {
          dst: outside,
          dstIndex: [0],
          src: fed,
          srcIndex: [0],
        }),
      /inside dst.*for index\.dst/,
    );
    bad(
      () =>
        copyWithIndexCopy(stream, dst, src, {
          dst,
          dstIndex: [0],
          src: dst.slice(0, 6, 8),
          srcIndex: [0],
        }),
      /overlap dst for index\.src/,
    );
    bad(
      () => copyWithIndexCopy(stream, dst, src, { dst, dstIndex: [8], src: fed, srcIndex: [0] }),
      /index\.dstIndex\[0\]/,
    );
    bad(
      () =>
        copyWithIndexCopy(stream, dst, src, { dst, dstIndex: [1, 1], src: fed, srcIndex: [0, 1] }),
      /not repeated/,
    );
    const odd = new Tensor({ ptr: dst.ptr + 2n, dtype: 'i32', shape: [2], device: 'cpu' });
    bad(
      () =>
        copyWithIndexCopy(stream, dst, src, { dst: odd, dstIndex: [0], src: fed, srcIndex: [0] }),
      /4-byte aligned address for index\.dst\.ptr/,
    );
    expect([...arena.readI32(dst)]).toEqual(new Array(8).fill(0)); // nothing was enqueued
  });
});
