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

/** Where one step's samples land: host memory of its own until {@link StepSampler.read}. */
export interface SampleReadback {
  readonly host: HostBuffer;
  readonly rows: number;
  readonly numTop: number;
  /** i32 [rows] in `host`: the sampled ids, where the next step's fed-back tokens are copied from. */
  readonly sampledIds: Tensor;
}

/**
 * Samples a step's last-token logits on the runner's device and stream (@x/kernels' sample), so
 * only the sampled ids — and log-probabilities when asked — cross to the host. The sampling kernel
 * writes them straight into pinned host memory of the step's own (HostBuffer.tensor: no copy
 * engine, no device copy), from a small pool, so several steps can be in flight; the next step's
 * fed-back tokens are copied from there (`SampleReadback.sampledIds`), on the stream. The scratch
 * and the pool's buffers are sized for the largest batch seen; growing them (`grow`) frees the old
 * ones, so the runner only grows with its stream idle. Never captured in a CUDA graph (sampling's
 * per-row parameters are staged per call).
 */
export class StepSampler {
  readonly #allocator: Allocator;
  readonly #vocab: number;
  #rows = 0;
  #numTop = 0;
  #scratch: Allocation | undefined;
  /** Read-backs not in use, each of `#offset(5, #rows, #numTop)` bytes. */
  readonly #free: HostBuffer[] = [];

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

  /** True when a batch of `rows` asking for `numTop` needs larger device outputs (see grow). */
  needsGrow(rows: number, numTop: number): boolean {
    return rows > this.#rows || numTop > this.#numTop;
  }

  /**
   * Sizes the scratch and the read-backs for `rows` × `numTop`. The stream must be idle and every
   * read-back released (the old ones are freed: a step in flight may still read its sampled ids).
   */
  grow(rows: number, numTop: number): void {
    if (!this.needsGrow(rows, numTop)) return;
    const r = Math.max(rows, this.#rows);
    const top = Math.max(numTop, this.#numTop);
    this.#freeAll();
    const device = this.#allocator.device;
    if (device.kind === 'cuda') {
      this.#scratch = this.#allocator.alloc(sampleWorkspaceBytes(r, this.#vocab), {
        tag: 'activations',
        owner: 'sampler.scratch',
      });
    }
    this.#rows = r;
    this.#numTop = top;
  }

  /**
   * Enqueues sampling of `logits` ([B, V] f32, the step's last-token logits) on `stream`, into a
   * read-back of its own (the batch must fit: grow first). Call {@link read} with the result once
   * the stream has run it (or {@link release} if the step failed).
   */
  enqueue(stream: Stream, logits: Tensor, request: SampleRequest): SampleReadback {
    const b = logits.shape[0]!;
    const numTop = StepSampler.validate(request, b);
    if (this.needsGrow(b, numTop)) {
      throw new InvalidArgumentError(
        'options.sample',
        `at most ${this.#rows} rows (grow first)`,
        b,
      );
    }
    const wantLp = request.logprobs === true;
    const rows = request.rows.map((r) => r ?? IDLE_ROW);
    const host = this.#acquire();
    const t = (i: number, dtype: 'i32' | 'f32', shape: number[]) =>
      host.tensor(dtype, shape, this.#offset(i, b, numTop));
    try {
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
    } catch (err) {
      this.#free.push(host);
      throw err;
    }
    return { host, rows: b, numTop, sampledIds: t(0, 'i32', [b]) };
  }

  /** The results of a step's {@link enqueue} (after its stream ran it); its memory is reused after. */
  read(readback: SampleReadback, request: SampleRequest): StepSamples {
    const { host, rows: b, numTop } = readback;
    const buf = host.buffer;
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
    this.release(readback);
    return out;
  }

  /** Returns a read-back's host memory to the pool without reading it (a failed step). */
  release(readback: SampleReadback): void {
    const h = readback.host;
    if (this.#free.includes(h)) return;
    // One taken before a grow is too small to hand out again.
    if (h.byteLength < this.#offset(5, this.#rows, this.#numTop)) h.dispose();
    else this.#free.push(h);
  }

  /** Frees the scratch and buffers (the stream must be idle and every read-back released). */
  dispose(): void {
    this.#freeAll();
    this.#rows = this.#numTop = 0;
  }

  #freeAll(): void {
    if (this.#scratch) this.#allocator.free(this.#scratch);
    this.#scratch = undefined;
    for (const h of this.#free) h.dispose();
    this.#free.length = 0;
  }

  /** A read-back of the current capacity (pinned for the device on CUDA), from the pool or new. */
  #acquire(): HostBuffer {
    const free = this.#free.pop();
    if (free !== undefined) return free;
    const device = this.#allocator.device;
    const size = Math.max(this.#offset(5, this.#rows, this.#numTop), 4096);
    return HostBuffer.alloc(size, device.kind === 'cuda' ? { device } : {});
  }

  // Outputs, 4-byte elements each, 64-byte aligned: sampled [B] | logprob [B] | rank [B] |
  // topIds [B, N] | topLogprobs [B, N]; offset(5) is the total.
  #offset(i: number, b: number, n: number): number {
    const sizes = [b, b, b, b * n, b * n];
    let at = 0;
    for (let j = 0; j < i; j++) at += Math.ceil((sizes[j]! * 4) / 64) * 64;
    return at;
  }

  #scratchTensor(b: number): Tensor {
    return this.#scratch!.tensor('u8', [sampleWorkspaceBytes(b, this.#vocab)]);
  }
}
