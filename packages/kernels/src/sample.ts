import { randomBytes } from 'node:crypto';
import { callNative, InvalidArgumentError, type Stream, type Tensor } from '@x/core';
import { assertShape, assertTensor, contiguous, cpuStream, mat } from './check.js';
import { isCudaStream } from './cuda-check.js';
import { sampleCuda } from './cuda-sample.js';
import { type NativeSampleRow, native } from './native.js';

/** Sampling parameters of one row (vLLM SamplingParams names and defaults). */
export interface SamplingRow {
  /** 0 (or < 1e-5) is greedy. Default 1. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 or -1 is off. Default off. */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p. (0, 1]; default 1 (off). */
  topP?: number;
  /** Drop tokens less likely than minP × the most likely one. [0, 1]; default 0 (off). */
  minP?: number;
  /** Seed of this request: with `step`, fixes the draw. Absent: a fresh random seed per call. */
  seed?: number | bigint;
  /** Tokens this request generated so far (mixed into the seed so each step draws anew). */
  step?: number;
  /** > 0; 1 is off. Divides positive / multiplies negative logits of tokens seen in prompt or output. */
  repetitionPenalty?: number;
  /** [-2, 2]; subtracted once from every token present in the output. */
  presencePenalty?: number;
  /** [-2, 2]; subtracted per occurrence in the output. */
  frequencyPenalty?: number;
  promptTokenIds?: ArrayLike<number>;
  outputTokenIds?: ArrayLike<number>;
  /** token id → value added to its logit (OpenAI logit_bias). */
  logitBias?: Readonly<Record<number, number>> | ReadonlyMap<number, number>;
  /** Tokens forbidden this step (their logits become -inf), e.g. stop tokens under min_tokens. */
  suppressTokenIds?: ArrayLike<number>;
}

/** Options of {@link sample}. */
export interface SampleOptions {
  /**
   * CUDA (required there): scratch of at least sampleWorkspaceBytes(B, V) bytes of device memory
   * (the processed logits and token counts of each row).
   */
  workspace?: Tensor;
}

/** Where {@link sample} writes; all on the stream's device. */
export interface SampleOutputs {
  /** [B] i32: the chosen token of each row. */
  sampled: Tensor;
  /** [B] f32: its log-probability under the raw (unprocessed) logits. */
  sampledLogprobs?: Tensor;
  /** [B] i32: its rank under the raw logits (1 = most likely; ties count). */
  sampledRanks?: Tensor;
  /** [B, N] i32 and [B, N] f32: the N most likely tokens under the raw logits, best first. */
  topIds?: Tensor;
  topLogprobs?: Tensor;
}

function num(
  name: string,
  v: unknown,
  dflt: number,
  ok: (x: number) => boolean,
  expected: string,
): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || Number.isNaN(v) || !ok(v))
    throw new InvalidArgumentError(name, expected, v);
  return v;
}

function ids(
  name: string,
  v: ArrayLike<number> | undefined,
  vocab: number,
): Int32Array | undefined {
  if (v === undefined) return undefined;
  const out = Int32Array.from(v);
  for (let i = 0; i < out.length; i++) {
    if (out[i] !== v[i] || out[i]! < 0 || out[i]! >= vocab) {
      throw new InvalidArgumentError(`${name}[${i}]`, `a token id in [0, ${vocab})`, v[i]);
    }
  }
  return out;
}

function toNative(r: SamplingRow, i: number, vocab: number): NativeSampleRow {
  const p = `rows[${i}]`;
  if (typeof r !== 'object' || r === null)
    throw new InvalidArgumentError(p, 'a SamplingRow object', r);
  let seed: bigint;
  if (r.seed === undefined) {
    seed = randomBytes(8).readBigUInt64LE(0);
  } else if (typeof r.seed === 'bigint' || Number.isSafeInteger(r.seed)) {
    seed = BigInt.asUintN(64, BigInt(r.seed));
  } else {
    throw new InvalidArgumentError(`${p}.seed`, 'an integer or bigint', r.seed);
  }
  const row: NativeSampleRow = {
    temperature: num(
      `${p}.temperature`,
      r.temperature,
      1,
      (x) => x >= 0 && Number.isFinite(x),
      'a number >= 0',
    ),
    topK: num(`${p}.topK`, r.topK, 0, (x) => Number.isInteger(x) && x >= -1, 'an integer >= -1'),
    topP: num(`${p}.topP`, r.topP, 1, (x) => x > 0 && x <= 1, 'a number in (0, 1]'),
    minP: num(`${p}.minP`, r.minP, 0, (x) => x >= 0 && x <= 1, 'a number in [0, 1]'),
    seed,
    step: BigInt(
      num(`${p}.step`, r.step, 0, (x) => Number.isSafeInteger(x) && x >= 0, 'an integer >= 0'),
    ),
    repetitionPenalty: num(
      `${p}.repetitionPenalty`,
      r.repetitionPenalty,
      1,
      (x) => x > 0 && Number.isFinite(x),
      'a number > 0',
    ),
    presencePenalty: num(
      `${p}.presencePenalty`,
      r.presencePenalty,
      0,
      (x) => x >= -2 && x <= 2,
      'a number in [-2, 2]',
    ),
    frequencyPenalty: num(
      `${p}.frequencyPenalty`,
      r.frequencyPenalty,
      0,
      (x) => x >= -2 && x <= 2,
      'a number in [-2, 2]',
    ),
  };
  const prompt = ids(`${p}.promptTokenIds`, r.promptTokenIds, vocab);
  const output = ids(`${p}.outputTokenIds`, r.outputTokenIds, vocab);
  const suppress = ids(`${p}.suppressTokenIds`, r.suppressTokenIds, vocab);
  if (prompt) row.promptIds = prompt;
  if (output) row.outputIds = output;
  if (suppress) row.suppressIds = suppress;
  if (r.logitBias !== undefined) {
    const entries =
      r.logitBias instanceof Map
        ? [...r.logitBias.entries()]
        : Object.entries(r.logitBias).map(([k, v]) => [Number(k), v]);
    row.biasIds = ids(
      `${p}.logitBias (keys)`,
      entries.map((e) => e[0] as number),
      vocab,
    );
    row.biasValues = Float32Array.from(
      entries.map(([k, v]) =>
        num(`${p}.logitBias[${k}]`, v, 0, Number.isFinite, 'a finite number'),
      ),
    );
  }
  return row;
}

/**
 * Samples one token per row of logits [B, V] f32 with vLLM's semantics and order of operations
 * (penalties and logit bias → greedy or temperature → min-p → top-k → top-p → draw); log-probs come
 * from the raw logits, as vLLM's default. See the README for the seeded generator. CUDA: logits
 * f32, bf16 or f16; `options.workspace` is required; at most 64 top log-probabilities; only the
 * outputs are written, so only sampled ids need cross to the host.
 */
export function sample(
  stream: Stream,
  logits: Tensor,
  rows: readonly SamplingRow[],
  outputs: SampleOutputs,
  options: SampleOptions = {},
): void {
  const cuda = isCudaStream(stream);
  const h = cuda ? 0n : cpuStream(stream);
  const dev = stream.device.name;
  assertTensor('logits', logits, cuda ? ['f32', 'bf16', 'f16'] : ['f32'], dev);
  assertShape('logits', logits, [null, null]);
  const [b, vocab] = logits.shape as [number, number];
  if (!Array.isArray(rows) || rows.length !== b) {
    throw new InvalidArgumentError(
      'rows',
      `an array of ${b} SamplingRow (one per logits row)`,
      rows,
    );
  }
  const o = outputs;
  assertTensor('outputs.sampled', o?.sampled, ['i32'], dev);
  assertShape('outputs.sampled', contiguous('outputs.sampled', o.sampled), [b]);
  if (o.sampledLogprobs) {
    assertTensor('outputs.sampledLogprobs', o.sampledLogprobs, ['f32'], dev);
    assertShape(
      'outputs.sampledLogprobs',
      contiguous('outputs.sampledLogprobs', o.sampledLogprobs),
      [b],
    );
  }
  if (o.sampledRanks) {
    assertTensor('outputs.sampledRanks', o.sampledRanks, ['i32'], dev);
    assertShape('outputs.sampledRanks', contiguous('outputs.sampledRanks', o.sampledRanks), [b]);
  }
  let numTop = 0;
  if (o.topIds || o.topLogprobs) {
    if (!o.topIds || !o.topLogprobs) {
      throw new InvalidArgumentError(
        'outputs',
        'topIds and topLogprobs together',
        'only one of them',
      );
    }
    assertTensor('outputs.topIds', o.topIds, ['i32'], dev);
    assertTensor('outputs.topLogprobs', o.topLogprobs, ['f32'], dev);
    assertShape('outputs.topIds', contiguous('outputs.topIds', o.topIds), [b, null]);
    numTop = o.topIds.shape[1]!;
    assertShape('outputs.topLogprobs', contiguous('outputs.topLogprobs', o.topLogprobs), [
      b,
      numTop,
    ]);
  }
  if (cuda) {
    const packed = rows.map((r, i) => toNative(r, i, vocab));
    sampleCuda(stream, logits, packed, o, numTop, options);
    return;
  }
  const params = {
    logits: mat('logits', logits),
    rows: rows.map((r, i) => toNative(r, i, vocab)),
    numTop,
    sampled: o.sampled.ptr,
    sampledLogprob: o.sampledLogprobs?.ptr,
    sampledRank: o.sampledRanks?.ptr,
    topIds: o.topIds?.ptr,
    topLogprobs: o.topLogprobs?.ptr,
  };
  callNative(() => native().sample(h, params));
}

/** The uniform number in [0, 1) a row with (seed, step) draws (SplitMix64; see README). */
export function sampleUniform(seed: number | bigint, step: number): number {
  return native().sampleUniform(BigInt.asUintN(64, BigInt(seed)), BigInt(step));
}
