import {
  callNative,
  type DeviceName,
  InvalidArgumentError,
  parseDevice,
  type Stream,
  type Tensor,
} from '@x/core';
import { assertFinite, assertPositiveInt, assertShape, assertTensor, contiguous } from './check.js';
import { GPU_DTYPES, gmat, sameDtype, workspaceOf } from './cuda-check.js';
import { gpuCacheLayout } from './cuda-elementwise.js';
import { cudaNative, DTYPE_CODE } from './cuda-native.js';
import type { PagedAttentionOptions } from './paged-attention.js';

/** The CUDA path of pagedAttention. Internal. */
export function pagedAttentionCuda(
  stream: Stream,
  out: Tensor,
  q: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  options: PagedAttentionOptions,
): void {
  const dev = stream.device.name;
  const dtype = assertTensor('q', q, GPU_DTYPES, dev).dtype as 'bf16' | 'f16';
  const layout = gpuCacheLayout(kCache, vCache, dtype, dev);
  sameDtype('out', out, dtype, dev);
  assertShape('q', q, [null, null]);
  const width = q.shape[1]!;
  if (width % layout.headDim !== 0 || (width / layout.headDim) % layout.numKvHeads !== 0) {
    throw new InvalidArgumentError(
      'q.shape',
      `[T, numHeads·${layout.headDim}] with numHeads a multiple of numKvHeads (${layout.numKvHeads})`,
      `[${q.shape.join(', ')}]`,
    );
  }
  if (layout.headDim > 256) {
    throw new InvalidArgumentError('kCache.shape[3]', 'a head size <= 256 on CUDA', layout.headDim);
  }
  assertShape('out', out, [q.shape[0]!, width]);
  const { blockTables, seqLens, queryStartLoc } = options;
  assertTensor('options.blockTables', blockTables, ['i32'], dev);
  assertTensor('options.seqLens', seqLens, ['i32'], dev);
  assertTensor('options.queryStartLoc', queryStartLoc, ['i32'], dev);
  assertShape('options.blockTables', contiguous('options.blockTables', blockTables), [null, null]);
  const numSeqs = blockTables.shape[0]!;
  if (numSeqs < 1)
    throw new InvalidArgumentError(
      'options.blockTables.shape[0]',
      'at least one sequence',
      numSeqs,
    );
  assertShape('options.seqLens', contiguous('options.seqLens', seqLens), [numSeqs]);
  assertShape('options.queryStartLoc', contiguous('options.queryStartLoc', queryStartLoc), [
    numSeqs + 1,
  ]);
  const maxSeqLen =
    options.maxSeqLen === undefined ? 0 : assertPositiveInt('options.maxSeqLen', options.maxSeqLen);
  if (options.decode !== undefined && typeof options.decode !== 'boolean') {
    throw new InvalidArgumentError('options.decode', 'a boolean', options.decode);
  }
  const counters = options.counters;
  if (counters !== undefined) {
    contiguous('options.counters', assertTensor('options.counters', counters, ['i32'], dev));
    const need = q.shape[0]! * (width / layout.headDim);
    if (counters.numel < need) {
      throw new InvalidArgumentError(
        'options.counters',
        `at least T · numHeads = ${need} elements`,
        counters.numel,
      );
    }
  }
  const params = {
    ...layout,
    out: gmat('out', out),
    q: gmat('q', q),
    kCache: kCache.ptr,
    vCache: vCache.ptr,
    numHeads: width / layout.headDim,
    numSeqs,
    maxBlocks: blockTables.shape[1]!,
    scale: assertFinite('options.scale', options.scale),
    blockTables: blockTables.ptr,
    seqLens: seqLens.ptr,
    queryStartLoc: queryStartLoc.ptr,
    workspace: options.workspace?.ptr,
    workspaceBytes: workspaceOf('options.workspace', options.workspace, dev),
    counters: counters?.ptr,
    maxSeqLen,
    decode: options.decode === undefined ? -1 : options.decode ? 1 : 0,
    hostMetadata: options.hostMetadata === true ? 1 : 0,
    earlierKeysReady: options.earlierKeysReady === true ? 1 : 0,
    dtype: DTYPE_CODE[dtype],
  };
  callNative(() => cudaNative().cudaPagedAttention(stream.nativeHandle, params));
}

/** What {@link pagedAttentionWorkspaceBytes} needs to know about the model and the batch limits. */
export interface AttentionWorkspaceOptions {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  blockSize: number;
  /** Columns of the block table (max blocks per sequence). */
  maxBlocks: number;
  /** The most decode tokens (= sequences) one call will have. */
  maxTokens: number;
  /** Upper bound of sequence lengths passed as options.maxSeqLen (default maxBlocks × blockSize). */
  maxSeqLen?: number;
}

/**
 * Bytes of `options.workspace` that let pagedAttention on `device` split long contexts over the
 * GPU for every decode batch up to `maxTokens` (without a workspace, or with less, decode uses
 * fewer splits: still correct, slower for short batches of long sequences).
 */
export function pagedAttentionWorkspaceBytes(
  device: DeviceName,
  o: AttentionWorkspaceOptions,
): number {
  const d = parseDevice(device);
  if (d.kind !== 'cuda') return 0;
  for (const k of [
    'numHeads',
    'numKvHeads',
    'headDim',
    'blockSize',
    'maxBlocks',
    'maxTokens',
  ] as const) {
    assertPositiveInt(`options.${k}`, o?.[k]);
  }
  let most = 0;
  for (let t = 1; t <= o.maxTokens; t++) {
    const plan = callNative(() =>
      cudaNative().cudaAttentionPlan(null, {
        device: d.index,
        tokens: t,
        numSeqs: t,
        numHeads: o.numHeads,
        numKvHeads: o.numKvHeads,
        headDim: o.headDim,
        blockSize: o.blockSize,
        maxBlocks: o.maxBlocks,
        maxSeqLen: o.maxSeqLen ?? 0,
        decode: 1,
        workspaceBytes: Number.MAX_SAFE_INTEGER,
      }),
    );
    most = Math.max(most, plan.workspaceBytes);
  }
  return most;
}
