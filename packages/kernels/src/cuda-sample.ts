import { callNative, InvalidArgumentError, type Stream, type Tensor } from '@x/core';
import { assertShape, assertTensor, contiguous } from './check.js';
import { gmat, workspaceOf } from './cuda-check.js';
import { cudaNative, DTYPE_CODE } from './cuda-native.js';
import type { NativeSampleRow } from './native.js';
import type { SampleOptions, SampleOutputs } from './sample.js';

/** Bytes of one packed row (native/kernels/cuda/params.h SampleRowParams). */
const ROW_BYTES = 80;

/** The most top log-probabilities per row the CUDA sampler returns. */
export const MAX_TOP_LOGPROBS_CUDA = 64;

/** Logits per chunk of the CUDA sampler's statistics pass (params.h kSampleChunk). */
const STAT_CHUNK = 2048;

/**
 * Bytes of `options.workspace` that sample needs on CUDA for `rows` rows of `vocab` logits: per
 * row V f32 + V u32 (processed logits, token counts), then 16 bytes per 2048-logit chunk (the
 * raw row's statistics).
 */
export function sampleWorkspaceBytes(rows: number, vocab: number): number {
  return Math.ceil((rows * vocab * 8) / 16) * 16 + rows * Math.ceil(vocab / STAT_CHUNK) * 16;
}

/** Packs validated rows: [rows × 80 bytes][ids i32 × n][bias f32 × n] (bias parallel to ids). */
function pack(rows: readonly NativeSampleRow[]): { packed: ArrayBuffer; numIds: number } {
  let numIds = 0;
  for (const r of rows) {
    numIds +=
      (r.promptIds?.length ?? 0) +
      (r.outputIds?.length ?? 0) +
      (r.biasIds?.length ?? 0) +
      (r.suppressIds?.length ?? 0);
  }
  const base = rows.length * ROW_BYTES;
  const packed = new ArrayBuffer(base + numIds * 8);
  const dv = new DataView(packed);
  const ids = new Int32Array(packed, base, numIds);
  const bias = new Float32Array(packed, base + numIds * 4, numIds);
  let at = 0;
  const list = (src: Int32Array | undefined): [number, number] => {
    const off = at;
    if (src) {
      ids.set(src, at);
      at += src.length;
    }
    return [off, src?.length ?? 0];
  };
  rows.forEach((r, i) => {
    const o = i * ROW_BYTES;
    dv.setFloat32(o, r.temperature, true);
    dv.setFloat32(o + 4, r.topP, true);
    dv.setFloat32(o + 8, r.minP, true);
    dv.setFloat32(o + 12, r.repetitionPenalty, true);
    dv.setFloat32(o + 16, r.presencePenalty, true);
    dv.setFloat32(o + 20, r.frequencyPenalty, true);
    dv.setInt32(o + 24, r.topK, true);
    dv.setInt32(o + 28, 0, true);
    dv.setBigUint64(o + 32, r.seed, true);
    dv.setBigUint64(o + 40, r.step, true);
    const lists = [list(r.promptIds), list(r.outputIds)];
    const biasAt = at;
    lists.push(list(r.biasIds));
    if (r.biasValues) bias.set(r.biasValues, biasAt);
    lists.push(list(r.suppressIds));
    lists.forEach(([off, n], j) => {
      dv.setInt32(o + 48 + j * 8, off, true);
      dv.setInt32(o + 52 + j * 8, n, true);
    });
  });
  return { packed, numIds };
}

/** The CUDA path of sample. Internal. */
export function sampleCuda(
  stream: Stream,
  logits: Tensor,
  rows: readonly NativeSampleRow[],
  o: SampleOutputs,
  numTop: number,
  options: SampleOptions,
): void {
  const dev = stream.device.name;
  const [b, vocab] = logits.shape as [number, number];
  if (numTop > MAX_TOP_LOGPROBS_CUDA) {
    throw new InvalidArgumentError(
      'outputs.topIds.shape[1]',
      `at most ${MAX_TOP_LOGPROBS_CUDA} on CUDA`,
      numTop,
    );
  }
  const need = sampleWorkspaceBytes(b, vocab);
  const have = workspaceOf('options.workspace', options.workspace, dev);
  if (have < need) {
    throw new InvalidArgumentError(
      'options.workspace',
      `a device tensor of at least ${need} bytes on CUDA (sampleWorkspaceBytes(${b}, ${vocab}))`,
      options.workspace === undefined ? undefined : `${have} bytes`,
    );
  }
  assertTensor('logits', logits, ['f32', 'bf16', 'f16'], dev);
  for (const [name, t] of [
    ['outputs.sampled', o.sampled],
    ['outputs.sampledRanks', o.sampledRanks],
  ] as const) {
    if (t) assertShape(name, contiguous(name, assertTensor(name, t, ['i32'], dev)), [b]);
  }
  const { packed, numIds } = pack(rows);
  const params = {
    logits: gmat('logits', logits),
    logitsDtype: DTYPE_CODE[logits.dtype as 'f32' | 'bf16' | 'f16'],
    numTop,
    packed,
    numIds,
    work: options.workspace!.ptr,
    sampled: o.sampled.ptr,
    sampledLogprob: o.sampledLogprobs?.ptr,
    sampledRank: o.sampledRanks?.ptr,
    topIds: o.topIds?.ptr,
    topLogprobs: o.topLogprobs?.ptr,
  };
  callNative(() => cudaNative().cudaSample(stream.nativeHandle, params));
}
