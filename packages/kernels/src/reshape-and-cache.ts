import { callNative, type Stream, type Tensor } from '@x/core';
import { assertShape, assertTensor, contiguous, cpuStream, mat } from './check.js';
import { isCudaStream } from './cuda-check.js';
import { reshapeAndCacheCuda } from './cuda-elementwise.js';
import { native } from './native.js';

/** The paged KV cache of one layer: kCache and vCache [numBlocks, blockSize, numKvHeads, headDim] f32. */
export function cacheLayout(
  kCache: Tensor,
  vCache: Tensor,
  device: string,
): {
  kCache: bigint;
  vCache: bigint;
  numBlocks: number;
  blockSize: number;
  numKvHeads: number;
  headDim: number;
} {
  assertTensor('kCache', kCache, ['f32'], device);
  assertTensor('vCache', vCache, ['f32'], device);
  assertShape('kCache', contiguous('kCache', kCache), [null, null, null, null]);
  assertShape('vCache', contiguous('vCache', vCache), kCache.shape);
  const [numBlocks, blockSize, numKvHeads, headDim] = kCache.shape as [
    number,
    number,
    number,
    number,
  ];
  return { kCache: kCache.ptr, vCache: vCache.ptr, numBlocks, blockSize, numKvHeads, headDim };
}

/**
 * Writes this step's keys and values into the paged cache: token t goes to slot slotMapping[t]
 * (= block · blockSize + offset); slot -1 is skipped (padding). Shapes: k, v [T, numKvHeads·headDim]
 * f32; slotMapping [T] i64. A slot outside the cache fails the stream. CUDA: k, v and the caches
 * bf16 or f16; a bad slot is skipped and reported by checkKernelErrors.
 */
export function reshapeAndCache(
  stream: Stream,
  k: Tensor,
  v: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  slotMapping: Tensor,
): void {
  if (isCudaStream(stream)) {
    reshapeAndCacheCuda(stream, k, v, kCache, vCache, slotMapping);
    return;
  }
  const h = cpuStream(stream);
  const dev = stream.device.name;
  const layout = cacheLayout(kCache, vCache, dev);
  assertTensor('k', k, ['f32'], dev);
  assertTensor('v', v, ['f32'], dev);
  assertTensor('slotMapping', slotMapping, ['i64'], dev);
  const width = layout.numKvHeads * layout.headDim;
  assertShape('k', k, [null, width]);
  assertShape('v', v, [k.shape[0]!, width]);
  assertShape('slotMapping', contiguous('slotMapping', slotMapping), [k.shape[0]!]);
  const params = { ...layout, k: mat('k', k), v: mat('v', v), slotMapping: slotMapping.ptr };
  callNative(() => native().reshapeAndCache(h, params));
}
