// indexCopy on the CPU: the copies run in stream order (after work enqueued before them, before
// work enqueued after), runs of consecutive indices and scattered ones give the same result, bits
// are copied as they are, and bad arguments are typed errors. The CUDA kernel is checked against
// the same expectations by packages/kernels/test/gpu/elementwise.gpu.mjs.
import { InvalidArgumentError, Stream } from '@x/core';
import { afterEach, describe, expect, it } from 'vitest';
import { indexCopy } from './index-copy.js';
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
