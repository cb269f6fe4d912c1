import { HostBuffer, InvalidArgumentError, type Stream, type Tensor } from '@x/core';
import type { Allocation, Allocator } from '@x/cumem';
import { MAX_TOP_LOGPROBS_CUDA, type SamplingRow, sample, sampleWorkspaceBytes } from '@x/kernels';

/** What {@link ModelRunner.execute} samples on the device (ExecuteOptions.sample). */
export interface SampleRequest {
  /**
   * One entry per sequence of the batch, in batch order: how to sample its next token, or null
   * when it samples none this step (a prefill chunk that is not its prompt's last).
   */
  rows: readonly (SamplingRow | null)[];
  /** Also return each sampled token's log-probability and rank (under the raw logits). */
  logprobs?: boolean;
  /** Also return the N most likely tokens and their log-probabilities (0..64; default 0). */
  topLogprobs?: number;
}

/** The tokens one step sampled, indexed by the batch's sequence order. */
export interface StepSamples {
  /** [B]: the sampled token of each sequence; -1 where its row was null. */
  tokenIds: Int32Array;
  /** [B] with `logprobs`: the sampled token's log-probability. */
  logprobs?: Float32Array;
  /** [B] with `logprobs`: its rank (1 = most likely). */
  ranks?: Int32Array;
  /** [B, topLogprobs] with `topLogprobs`: the most likely tokens, best first. */
  topIds?: Int32Array;
  /** [B, topLogprobs]: their log-probabilities. */
  topLogprobs?: Float32Array;
}

/** Rows that sample nothing still go through the kernel (one call per step): greedy is cheapest. */
const IDLE_ROW: SamplingRow = { temperature: 0 };

/**
 * Samples a step's last-token logits on the runner's device and stream (@x/kernels' sample), so
 * only the sampled ids — and log-probabilities when asked — cross to the host. Its scratch, device
 * outputs and pinned read-back grow to the largest batch seen; they are never captured in a CUDA
 * graph (sampling's per-row parameters are staged per call), so growing them is safe between steps.
 */
export class StepSampler {
  readonly #allocator: Allocator;
  readonly #vocab: number;
  #rows = 0;
  #numTop = 0;
  #scratch: Allocation | undefined;
  #outputs: Allocation | undefined;
  #host: HostBuffer | undefined;

  constructor(allocator: Allocator, vocabSize: number) {
    this.#allocator = allocator;
    this.#vocab = vocabSize;
  }

  /** Checks `request` against a batch of `batchSize` sequences; returns the top-N it asks for. */
  static validate(request: SampleRequest, batchSize: number): number {
    if (typeof request !== 'object' || request === null || !Array.isArray(request.rows)) {
      throw new InvalidArgumentError('options.sample', 'an object with a rows array', request);
    }
    if (request.rows.length !== batchSize) {
      throw new InvalidArgumentError(
        'options.sample.rows',
        `one entry (SamplingRow or null) per sequence of the batch (${batchSize})`,
        request.rows.length,
      );
    }
    const n = request.topLogprobs ?? 0;
    if (!Number.isInteger(n) || n < 0 || n > MAX_TOP_LOGPROBS_CUDA) {
      throw new InvalidArgumentError(
        'options.sample.topLogprobs',
        `an integer in [0, ${MAX_TOP_LOGPROBS_CUDA}]`,
        request.topLogprobs,
      );
    }
    return n;
  }

  /**
   * Enqueues sampling of `logits` ([B, V] f32, the step's last-token logits) and the read-back of
   * the results on `stream`. Call {@link read} after the stream has run it.
   */
  enqueue(stream: Stream, logits: Tensor, request: SampleRequest): void {
    const b = logits.shape[0]!;
    const numTop = StepSampler.validate(request, b);
    this.#ensure(b, numTop);
    const wantLp = request.logprobs === true;
    const out = this.#outputs!;
    const t = (i: number, dtype: 'i32' | 'f32', shape: number[]) =>
      out.tensor(dtype, shape, this.#offset(i, b, numTop));
    const rows = request.rows.map((r) => r ?? IDLE_ROW);
    sample(
      stream,
      logits,
      rows,
      {
        sampled: t(0, 'i32', [b]),
        ...(wantLp ? { sampledLogprobs: t(1, 'f32', [b]), sampledRanks: t(2, 'i32', [b]) } : {}),
        ...(numTop > 0
          ? { topIds: t(3, 'i32', [b, numTop]), topLogprobs: t(4, 'f32', [b, numTop]) }
          : {}),
      },
      stream.device.kind === 'cuda' ? { workspace: this.#scratchTensor(b) } : {},
    );
    stream.copy(this.#host!.ptr, out.ptr, this.#offset(5, b, numTop));
  }

  /** The results of the last {@link enqueue}, copied out of the read-back buffer. */
  read(request: SampleRequest): StepSamples {
    const b = request.rows.length;
    const numTop = request.topLogprobs ?? 0;
    const buf = this.#host!.buffer;
    const i32 = (i: number, n: number) =>
      new Int32Array(buf, this.#offset(i, b, numTop), n).slice();
    const f32 = (i: number, n: number) =>
      new Float32Array(buf, this.#offset(i, b, numTop), n).slice();
    const tokenIds = i32(0, b);
    request.rows.forEach((r, i) => {
      if (r === null) tokenIds[i] = -1;
    });
    const out: StepSamples = { tokenIds };
    if (request.logprobs === true) {
      out.logprobs = f32(1, b);
      out.ranks = i32(2, b);
    }
    if (numTop > 0) {
      out.topIds = i32(3, b * numTop);
      out.topLogprobs = f32(4, b * numTop);
    }
    return out;
  }

  /** Frees the scratch and buffers (the stream must be idle). */
  dispose(): void {
    if (this.#scratch) this.#allocator.free(this.#scratch);
    if (this.#outputs) this.#allocator.free(this.#outputs);
    this.#host?.dispose();
    this.#scratch = this.#outputs = this.#host = undefined;
    this.#rows = this.#numTop = 0;
  }

  // Outputs, 4-byte elements each, 64-byte aligned: sampled [B] | logprob [B] | rank [B] |
  // topIds [B, N] | topLogprobs [B, N]; offset(5) is the total.
  #offset(i: number, b: number, n: number): number {
    const sizes = [b, b, b, b * n, b * n];
    let at = 0;
    for (let j = 0; j < i; j++) at += Math.ceil((sizes[j]! * 4) / 64) * 64;
    return at;
  }

  #ensure(b: number, numTop: number): void {
    if (b <= this.#rows && numTop <= this.#numTop) return;
    const rows = Math.max(b, this.#rows);
    const top = Math.max(numTop, this.#numTop);
    this.dispose();
    const device = this.#allocator.device;
    const bytes = this.#offset(5, rows, top);
    this.#outputs = this.#allocator.alloc(bytes, { tag: 'activations', owner: 'sampler.outputs' });
    this.#host = HostBuffer.alloc(bytes, device.kind === 'cuda' ? { device } : {});
    if (device.kind === 'cuda') {
      this.#scratch = this.#allocator.alloc(sampleWorkspaceBytes(rows, this.#vocab), {
        tag: 'activations',
        owner: 'sampler.scratch',
      });
    }
    this.#rows = rows;
    this.#numTop = top;
  }

  #scratchTensor(b: number): Tensor {
    return this.#scratch!.tensor('u8', [sampleWorkspaceBytes(b, this.#vocab)]);
  }
}
