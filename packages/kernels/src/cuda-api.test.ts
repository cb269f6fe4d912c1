// The parts of the CUDA-facing API that behave the same on a machine without a GPU: the fused
// rotary + KV-cache write (on the CPU: the two ops back to back), checkKernelErrors (on the CPU:
// the stream's own failure) and the build report. The CUDA kernels themselves are checked on a GPU
// by packages/kernels/test/gpu/*.mjs.
import { InvalidArgumentError, Stream, StreamError } from '@x/core';
import { afterEach, describe, expect, it } from 'vitest';
import { sampleWorkspaceBytes } from './cuda-sample.js';
import { embedding } from './embedding.js';
import { fusedLinear } from './fused-linear.js';
import { checkKernelErrors, gpuKernelInfo } from './kernel-errors.js';
import { reshapeAndCache } from './reshape-and-cache.js';
import { ropeCosSinCache } from './rope-cache.js';
import { rotaryEmbedding } from './rotary-embedding.js';
import { Arena, expectClose, randomF32, rng } from './test-util.js';

const stream = Stream.create('cpu');
const arena = new Arena();
afterEach(async () => {
  await stream.synchronize().catch(() => {});
  arena.dispose();
});

describe('rotaryEmbedding with options.cache', () => {
  it('equals rotaryEmbedding then reshapeAndCache, slot -1 skipped', async () => {
    const rand = rng(7);
    const [t, nq, nk, hd, blocks, bs, maxPos] = [5, 4, 2, 8, 3, 4, 32];
    const cos = arena.f32(
      [maxPos, hd],
      ropeCosSinCache({ rotaryDim: hd, theta: 10000, maxPositions: maxPos }),
    );
    const pos = arena.i32([t], [3, 0, 17, 9, 31]);
    const slots = arena.i64([t], [5, -1, 0, 11, 2]);
    const qData = randomF32(t * nq * hd, rand);
    const kData = randomF32(t * nk * hd, rand);
    const v = arena.f32([t, nk * hd], randomF32(t * nk * hd, rand));
    const caches = () => {
      const init = randomF32(blocks * bs * nk * hd, rand);
      return [
        arena.f32([blocks, bs, nk, hd], init),
        arena.f32([blocks, bs, nk, hd], init),
      ] as const;
    };
    const [kc1, vc1] = caches();
    const [kc2, vc2] = [
      arena.f32([blocks, bs, nk, hd], arena.read(kc1).slice()),
      arena.f32([blocks, bs, nk, hd], arena.read(vc1).slice()),
    ];
    const q1 = arena.f32([t, nq * hd], qData);
    const k1 = arena.f32([t, nk * hd], kData);
    const q2 = arena.f32([t, nq * hd], qData);
    const k2 = arena.f32([t, nk * hd], kData);
    const rope = { headDim: hd, rotaryDim: hd, neox: true };
    rotaryEmbedding(stream, pos, q1, k1, cos, {
      ...rope,
      cache: { v, kCache: kc1, vCache: vc1, slotMapping: slots },
    });
    rotaryEmbedding(stream, pos, q2, k2, cos, rope);
    reshapeAndCache(stream, k2, v, kc2, vc2, slots);
    await stream.synchronize();
    expectClose(arena.read(q1), arena.read(q2), 0, 0);
    expectClose(arena.read(k1), arena.read(k2), 0, 0);
    expectClose(arena.read(kc1), arena.read(kc2), 0, 0);
    expectClose(arena.read(vc1), arena.read(vc2), 0, 0);
  });
});

describe('fusedLinear', () => {
  it('is the CUDA decode path: a CPU stream gets a typed error naming the stream', () => {
    const x = arena.f32([1, 8]);
    const w = arena.f32([4, 8]);
    const out = arena.f32([1, 4]);
    const call = () => fusedLinear(stream, out, x, w);
    expect(call).toThrow(InvalidArgumentError);
    expect(call).toThrow(/Expected a CUDA stream.* for stream but received "cpu"/);
  });
});

describe('checkKernelErrors', () => {
  it('on a CPU stream reports the failed kernel like synchronize', async () => {
    const out = arena.f32([2, 4]);
    embedding(stream, out, arena.f32([3, 4], randomF32(12, rng(2))), arena.i32([2], [1, 3]));
    await expect(checkKernelErrors(stream)).rejects.toThrow(StreamError);
    await expect(checkKernelErrors(stream)).resolves.toBeUndefined();
  });

  it('validates its stream argument', async () => {
    await expect(checkKernelErrors({} as Stream)).rejects.toThrow(/Expected a Stream for stream/);
  });
});

describe('gpuKernelInfo', () => {
  it('reports the CUDA side of the build without needing a GPU', () => {
    const info = gpuKernelInfo();
    expect(typeof info.kernels).toBe('boolean');
    expect(info.architectures.length > 0).toBe(info.kernels);
    expect(typeof info.cublasLt).toBe('boolean');
    expect(info.cublasLtDetail.length).toBeGreaterThan(0);
  });

  it('sizes the sampling workspace as 8 bytes per logit plus 16 per 2048-logit chunk', () => {
    expect(sampleWorkspaceBytes(3, 1000)).toBe(24_000 + 3 * 16);
    expect(sampleWorkspaceBytes(1, 128_256)).toBe(128_256 * 8 + 63 * 16);
  });
});
