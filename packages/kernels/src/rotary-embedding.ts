import { callNative, InvalidArgumentError, type Stream, type Tensor } from '@x/core';
import {
  assertPositiveInt,
  assertShape,
  assertTensor,
  contiguous,
  cpuStream,
  mat,
} from './check.js';
import { isCudaStream } from './cuda-check.js';
import { rotaryEmbeddingCuda } from './cuda-elementwise.js';
import { native } from './native.js';
import { reshapeAndCache } from './reshape-and-cache.js';

/** Options of {@link rotaryEmbedding}. */
export interface RotaryEmbeddingOptions {
  headDim: number;
  /** Leading dimensions of each head that rotate (= headDim for Llama/Qwen). */
  rotaryDim: number;
  /** true: rotate halves (GPT-NeoX / HF `rotate_half`, Llama and Qwen); false: interleaved pairs (GPT-J). */
  neox: boolean;
  /**
   * Also writes this step's keys (after rotation) and values into the paged KV cache, exactly as
   * {@link reshapeAndCache}(stream, k, v, kCache, vCache, slotMapping) after the rotation would
   * (slot −1 skipped). On CUDA it is one kernel (k is rotated and cached in one pass); on the CPU
   * the two ops run back to back.
   */
  cache?: { v: Tensor; kCache: Tensor; vCache: Tensor; slotMapping: Tensor };
}

/**
 * Applies rotary position embedding to q and k in place. positions [T] i32|i64; q [T, nq·headDim];
 * k [T, nk·headDim] f32; cosSinCache [maxPos, rotaryDim] f32 (cos in the first half of each row,
 * sin in the second — see {@link ropeCosSinCache}). A position outside the cache fails the stream.
 * CUDA: q and k bf16 or f16 (f32 math); a bad position leaves its token unrotated and is reported by
 * checkKernelErrors.
 */
export function rotaryEmbedding(
  stream: Stream,
  positions: Tensor,
  q: Tensor,
  k: Tensor | null,
  cosSinCache: Tensor,
  options: RotaryEmbeddingOptions,
): void {
  if (isCudaStream(stream)) {
    rotaryEmbeddingCuda(stream, positions, q, k, cosSinCache, options);
    return;
  }
  const h = cpuStream(stream);
  const dev = stream.device.name;
  const headDim = assertPositiveInt('options.headDim', options?.headDim);
  const rotaryDim = assertPositiveInt('options.rotaryDim', options.rotaryDim);
  if (rotaryDim > headDim || rotaryDim % 2 !== 0) {
    throw new InvalidArgumentError(
      'options.rotaryDim',
      `an even integer <= headDim (${headDim})`,
      rotaryDim,
    );
  }
  assertTensor('positions', positions, ['i32', 'i64'], dev);
  assertTensor('q', q, ['f32'], dev);
  assertTensor('cosSinCache', cosSinCache, ['f32'], dev);
  const tokens = q.shape[0] ?? null;
  assertShape('positions', contiguous('positions', positions), [tokens]);
  assertShape('q', q, [tokens, null]);
  if (q.shape[1]! % headDim !== 0) {
    throw new InvalidArgumentError(
      'q.shape',
      `[${tokens}, a multiple of headDim ${headDim}]`,
      `[${q.shape.join(', ')}]`,
    );
  }
  if (k !== null) {
    assertTensor('k', k, ['f32'], dev);
    assertShape('k', k, [tokens, null]);
    if (k.shape[1]! % headDim !== 0) {
      throw new InvalidArgumentError(
        'k.shape',
        `[${tokens}, a multiple of headDim ${headDim}]`,
        `[${k.shape.join(', ')}]`,
      );
    }
  }
  assertShape('cosSinCache', contiguous('cosSinCache', cosSinCache), [null, rotaryDim]);
  const params = {
    positions: positions.ptr,
    positionsI64: positions.dtype === 'i64',
    q: mat('q', q),
    k: k === null ? undefined : mat('k', k),
    cosSin: cosSinCache.ptr,
    maxPos: cosSinCache.shape[0]!,
    headDim,
    rotaryDim,
    neox: options.neox !== false,
  };
  callNative(() => native().rotaryEmbedding(h, params));
  const c = options.cache;
  if (c !== undefined) {
    if (k === null) throw new InvalidArgumentError('k', 'a Tensor when options.cache is given', k);
    reshapeAndCache(stream, k, c.v, c.kCache, c.vCache, c.slotMapping);
  }
}
