import { HostBuffer, type Stream, Tensor } from '@x/core';
import { type SamplingRow, sample } from '@x/kernels';
import type { SampledTokens, TokenLogprobs } from '@x/scheduler';
import type { SampleRequest, StepSamples } from '../model-runner.js';
import type { ScheduledRow } from './request-states.js';
import { usesPenalties } from './sampling-params.js';

/** Host memory for one sampling call, grown to the largest batch seen (bytes). */
class Buffers {
  #buf: HostBuffer | undefined;

  view(bytes: number): HostBuffer {
    if (this.#buf === undefined || this.#buf.byteLength < bytes) {
      this.#buf?.dispose();
      this.#buf = HostBuffer.alloc(Math.max(bytes, 2 * (this.#buf?.byteLength ?? 0), 4096));
    }
    return this.#buf;
  }

  dispose(): void {
    this.#buf?.dispose();
    this.#buf = undefined;
  }
}

/** Most top log-probabilities one token may ask for (vLLM's default --max-logprobs). */
export const MAX_LOGPROBS = 20;

/**
 * Samples the next token of every row that asks for one, with the @x/kernels sampler on its own
 * stream (so sampling step N overlaps the forward pass of step N+1 on the runner's stream).
 * Seeded per request: (seed + completion index, number of tokens generated so far) fixes a draw,
 * so a request replays identically after a preemption or on a fresh engine.
 */
export class Sampler {
  readonly stream: Stream;
  readonly vocabSize: number;
  readonly #buffers = new Buffers();

  constructor(stream: Stream, vocabSize: number) {
    this.stream = stream;
    this.vocabSize = vocabSize;
  }

  /** `logits` is [rows.length, V] (the runner's last-token logits, in batch order). */
  async sample(
    rows: readonly ScheduledRow[],
    logits: Float32Array,
    timeoutMs: number,
  ): Promise<SampledTokens[]> {
    const v = this.vocabSize;
    const picked: number[] = [];
    rows.forEach((r, i) => {
      if (r.sample) picked.push(i);
    });
    if (picked.length === 0) return [];
    const s = picked.length;
    const numTop = Math.max(0, ...picked.map((i) => rows[i]!.state.logprobs ?? 0));
    const wantLogprobs = picked.some((i) => rows[i]!.state.logprobs !== null);
    // Layout: logits [S, V] f32 | sampled [S] i32 | logprob [S] f32 | rank [S] i32 |
    // topIds [S, N] i32 | topLogprobs [S, N] f32 — all 4-byte elements.
    const offLogits = 0;
    const offSampled = s * v;
    const offLp = offSampled + s;
    const offRank = offLp + s;
    const offTopIds = offRank + s;
    const offTopLp = offTopIds + s * numTop;
    const total = offTopLp + s * numTop;
    const buf = this.#buffers.view(total * 4);
    const f32 = new Float32Array(buf.buffer, 0, total);
    const i32 = new Int32Array(buf.buffer, 0, total);
    picked.forEach((row, k) => {
      f32.set(logits.subarray(row * v, (row + 1) * v), offLogits + k * v);
    });
    const t = (dtype: 'f32' | 'i32', off: number, shape: number[]) =>
      new Tensor({ ptr: buf.ptr + BigInt(off * 4), dtype, shape, device: 'cpu' });
    const samplingRows = picked.map((i) => this.samplingRow(rows[i]!));
    sample(this.stream, t('f32', offLogits, [s, v]), samplingRows, {
      sampled: t('i32', offSampled, [s]),
      ...(wantLogprobs
        ? { sampledLogprobs: t('f32', offLp, [s]), sampledRanks: t('i32', offRank, [s]) }
        : {}),
      ...(numTop > 0
        ? { topIds: t('i32', offTopIds, [s, numTop]), topLogprobs: t('f32', offTopLp, [s, numTop]) }
        : {}),
    });
    await this.stream.synchronize({ timeoutMs });
    return picked.map((i, k) => {
      const state = rows[i]!.state;
      const out: SampledTokens = { requestId: state.requestId, tokenIds: [i32[offSampled + k]!] };
      if (state.logprobs !== null) {
        const lp: TokenLogprobs = { logprob: f32[offLp + k]!, rank: i32[offRank + k]! };
        const n = state.logprobs;
        if (n > 0) {
          lp.topTokenIds = Array.from(
            i32.subarray(offTopIds + k * numTop, offTopIds + k * numTop + n),
          );
          lp.topLogprobs = Array.from(
            f32.subarray(offTopLp + k * numTop, offTopLp + k * numTop + n),
          );
        }
        out.logprobs = [lp];
      }
      return out;
    });
  }

  /**
   * The `sample` option of ModelRunner.execute for these rows, so the step samples on the
   * runner's device and stream and only sampled ids cross to the host (nothing when no row
   * samples).
   */
  deviceRequest(rows: readonly ScheduledRow[]): { sample?: SampleRequest } {
    if (!rows.some((r) => r.sample)) return {};
    const numTop = Math.max(0, ...rows.map((r) => (r.sample ? (r.state.logprobs ?? 0) : 0)));
    return {
      sample: {
        rows: rows.map((r) => (r.sample ? this.samplingRow(r) : null)),
        logprobs: rows.some((r) => r.sample && r.state.logprobs !== null),
        topLogprobs: numTop,
      },
    };
  }

  /** The sampled tokens of a step sampled on the device (`deviceRequest`), per sampling row. */
  fromDevice(rows: readonly ScheduledRow[], s: StepSamples): SampledTokens[] {
    const out: SampledTokens[] = [];
    const numTop = s.topIds === undefined ? 0 : s.topIds.length / rows.length;
    rows.forEach((r, i) => {
      if (!r.sample) return;
      const state = r.state;
      const one: SampledTokens = { requestId: state.requestId, tokenIds: [s.tokenIds[i]!] };
      if (state.logprobs !== null) {
        const lp: TokenLogprobs = { logprob: s.logprobs![i]!, rank: s.ranks![i]! };
        const n = state.logprobs;
        if (n > 0) {
          lp.topTokenIds = Array.from(s.topIds!.subarray(i * numTop, i * numTop + n));
          lp.topLogprobs = Array.from(s.topLogprobs!.subarray(i * numTop, i * numTop + n));
        }
        one.logprobs = [lp];
      }
      out.push(one);
    });
    return out;
  }

  /** The kernel sampler's parameters for one scheduled row (seed, step, penalties, masks). */
  samplingRow(r: ScheduledRow): SamplingRow {
    const { sampler: p, index } = r.state;
    const row: SamplingRow = {
      temperature: p.temperature,
      topP: p.topP,
      topK: p.topK,
      minP: p.minP,
      seed: BigInt.asUintN(64, BigInt(p.seed) + BigInt(index)),
      step: r.state.outputTokenIds.length,
    };
    if (usesPenalties(p)) {
      row.repetitionPenalty = p.repetitionPenalty;
      row.presencePenalty = p.presencePenalty;
      row.frequencyPenalty = p.frequencyPenalty;
      row.promptTokenIds = r.state.promptTokenIds;
      // A copy: the runner reads it when it enqueues the step, and by then a pipelined worker may
      // have appended the placeholders of this and later steps.
      row.outputTokenIds = r.state.outputTokenIds.slice();
    }
    if (p.logitBias !== null) row.logitBias = new Map(p.logitBias);
    if (r.maskStopTokens) {
      row.suppressTokenIds = [...r.state.eosTokenIds, ...r.state.stopTokenIds];
    }
    return row;
  }

  /** Frees the host buffers (the stream must be idle). */
  dispose(): void {
    this.#buffers.dispose();
  }
}
