import { callNative, InvalidArgumentError, type Stream, type Tensor } from '@x/core';
import { assertFinite, assertShape, assertTensor, contiguous, cpuStream, mat } from './check.js';
import { pagedAttentionCuda } from './cuda-attention.js';
import { isCudaStream } from './cuda-check.js';
import { native } from './native.js';
import { cacheLayout } from './reshape-and-cache.js';

/** Batch metadata of {@link pagedAttention} (all i32, on the stream's device). */
export interface PagedAttentionOptions {
  /** [B, maxBlocks]: block ids of each sequence, in order. */
  blockTables: Tensor;
  /** [B]: context length of each sequence including this step's tokens. */
  seqLens: Tensor;
  /** [B+1]: sequence b owns query tokens [queryStartLoc[b], queryStartLoc[b+1]). */
  queryStartLoc: Tensor;
  /** Softmax scale, usually headDim^-0.5. */
  scale: number;
  /**
   * CUDA: scratch for split-KV decode partials (persistent memory; size it with
   * pagedAttentionWorkspaceBytes). Without it (or with less) decode uses fewer splits.
   */
  workspace?: Tensor;
  /**
   * CUDA: i32 arrival counters, at least T · numHeads elements, all zero before the first call
   * (persistent memory under a tag sleep does not discard; every call leaves them zero). With them
   * the split-KV decode kernel merges its partials in the split that finishes last, with no second
   * kernel. Without them a combine kernel merges them. The CPU ignores them.
   */
  counters?: Tensor;
  /**
   * CUDA: an upper bound of seqLens (default: blockTables width × blockSize). A tighter bound lets
   * decode split long contexts better; a sequence longer than it is reported as an error.
   */
  maxSeqLen?: number;
  /**
   * CUDA: true when (nearly) every sequence has one query token (the split-KV decode kernel), false
   * for prefill (the tiled flash kernel). Default: decide from the token and sequence counts.
   * Both kernels compute the same result for any batch.
   */
  decode?: boolean;
  /**
   * CUDA: true when blockTables, seqLens and queryStartLoc are not outputs of the kernel enqueued
   * right before this call on the stream (they were uploaded, or written by an earlier kernel).
   * The decode kernel then reads them while that kernel still runs (programmatic dependent
   * launch), ~1 µs sooner per call at batch 1. Default false: they are read after it finished.
   * The CPU ignores it.
   */
  hostMetadata?: boolean;
  /**
   * CUDA, with hostMetadata: true when the cached keys and values before each sequence's query
   * tokens of this call (positions below seqLens[b] − qlen_b) are not outputs of the kernel enqueued
   * right before it — only this call's tokens' rows are (the qkv projection or the cache write
   * wrote them). The lean decode kernel (one query token) then copies the earlier rows while that
   * kernel still runs. Default false. The CPU ignores it.
   */
  earlierKeysReady?: boolean;
}

/**
 * Causal attention of a mixed batch (prefill chunks and decode tokens) over the paged cache. Query
 * token i of sequence b (of qlen_b = queryStartLoc[b+1] − queryStartLoc[b]) sits at position
 * seqLens[b] − qlen_b + i and attends to keys [0, that position]. GQA: query head h reads KV head
 * h / (numHeads / numKvHeads). Shapes: out, q [T, numHeads·headDim] f32; caches
 * [numBlocks, blockSize, numKvHeads, headDim] f32. Bad metadata fails the stream with its index.
 * CUDA: q, out and the caches bf16 or f16 (f32 softmax and accumulation), head sizes up to 256
 * (64 and 128 on tensor cores); bad metadata gives NaN rows and is reported by checkKernelErrors.
 */
export function pagedAttention(
  stream: Stream,
  out: Tensor,
  q: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  options: PagedAttentionOptions,
): void {
  for (const key of ['hostMetadata', 'earlierKeysReady'] as const) {
    if (options?.[key] !== undefined && typeof options[key] !== 'boolean') {
      throw new InvalidArgumentError(`options.${key}`, 'a boolean', options[key]);
    }
  }
  if (isCudaStream(stream)) {
    pagedAttentionCuda(stream, out, q, kCache, vCache, options);
    return;
  }
  const h = cpuStream(stream);
  const dev = stream.device.name;
  const layout = cacheLayout(kCache, vCache, dev);
  assertTensor('q', q, ['f32'], dev);
  assertTensor('out', out, ['f32'], dev);
  assertShape('q', q, [null, null]);
  const width = q.shape[1]!;
  if (width % layout.headDim !== 0 || (width / layout.headDim) % layout.numKvHeads !== 0) {
    throw new InvalidArgumentError(
      'q.shape',
      `[T, numHeads·${layout.headDim}] with numHeads a multiple of numKvHeads (${layout.numKvHeads})`,
      `[${q.shape.join(', ')}]`,
    );
  }
  assertShape('out', out, [q.shape[0]!, width]);
  const { blockTables, seqLens, queryStartLoc } = options;
  assertTensor('options.blockTables', blockTables, ['i32'], dev);
  assertTensor('options.seqLens', seqLens, ['i32'], dev);
  assertTensor('options.queryStartLoc', queryStartLoc, ['i32'], dev);
  assertShape('options.blockTables', contiguous('options.blockTables', blockTables), [null, null]);
  const numSeqs = blockTables.shape[0]!;
  assertShape('options.seqLens', contiguous('options.seqLens', seqLens), [numSeqs]);
  assertShape('options.queryStartLoc', contiguous('options.queryStartLoc', queryStartLoc), [
    numSeqs + 1,
  ]);
  const params = {
    ...layout,
    out: mat('out', out),
    q: mat('q', q),
    numHeads: width / layout.headDim,
    numSeqs,
    maxBlocks: blockTables.shape[1]!,
    scale: assertFinite('options.scale', options.scale),
    blockTables: blockTables.ptr,
    seqLens: seqLens.ptr,
    queryStartLoc: queryStartLoc.ptr,
  };
  callNative(() => native().pagedAttention(h, params));
}
