import {
  AsleepError,
  type Event,
  HostBuffer,
  InvalidArgumentError,
  type Stream,
  Tensor,
} from '@x/core';
import type { Allocation, Allocator } from '@x/cumem';
import { ropeCosSinCache } from '@x/kernels';
import type { ModelConfig } from './config.js';
import type { WeightSource } from './models/architecture.js';
import { DecoderModel } from './models/decoder.js';
import { KvCache } from './models/kv-cache.js';
import { architectureSpec } from './models/registry.js';
import { allocateScratch, type Scratch } from './models/runner-scratch.js';
import { type SequenceStep, stageInputs, validateBatch } from './models/step-inputs.js';
import {
  type SampleReadback,
  type SampleRequest,
  StepSampler,
  type StepSamples,
} from './models/step-sampler.js';
import { bucket, Workspace } from './models/workspace.js';

export type { SequenceStep } from './models/step-inputs.js';
export type { SampleRequest, StepSamples } from './models/step-sampler.js';

/** Options of {@link ModelRunner.execute}. */
export interface ExecuteOptions {
  /** Also return the logits of every token of the step ([T, V]; tests and prompt logprobs). */
  allLogits?: boolean;
  /** Bound on waiting for the stream (ms); default 300 000. */
  timeoutMs?: number;
  /**
   * Sample each sequence's next token on the runner's device and stream: only the sampled ids
   * (and log-probabilities when asked) are read back; the last-token logits stay on the device
   * unless `logits` is true.
   */
  sample?: SampleRequest;
  /** Read back the last-token logits: default false with `sample`, true without. */
  logits?: boolean;
}

/** What a step returns. */
export interface ExecuteResult {
  /** [B, V] row-major: the logits after the last token of each sequence (empty when sampling on the device without `logits`). */
  logits: Float32Array;
  /** [T, V] when asked for: the logits after every token, in batch order. */
  allLogits?: Float32Array;
  /** With `sample`: the sampled tokens. */
  sampled?: StepSamples;
}

/** Options of {@link ModelRunner.create}. */
export interface ModelRunnerOptions {
  config: ModelConfig;
  /** Loaded weights (HF names), e.g. from loadWeights. On CUDA bf16 or f16: the activations' dtype. */
  weights: WeightSource;
  allocator: Allocator;
  /** The stream every kernel of this runner is enqueued on. */
  stream: Stream;
  /** KV cache blocks per layer. */
  numKvBlocks: number;
  /** Tokens per KV block; default 16. */
  blockSize?: number;
  /** Longest sequence served (sizes the rotary table and block tables); default min(maxPositionEmbeddings, 4096). */
  maxModelLen?: number;
  /** CUDA: the largest decode batch replayed from a CUDA graph (buckets 1, 2, 4, 8, 16, 24, …); default 256. */
  maxNumSeqs?: number;
  /** CUDA: run every step eagerly, never capturing or replaying graphs (vLLM's enforce_eager). */
  enforceEager?: boolean;
}

/** One enqueued step: what reading it back needs, and what to free after. */
interface InFlight {
  n: number;
  v: number;
  wantLogits: boolean;
  timeoutMs: number;
  ws: Workspace;
  done?: Event;
  sample?: SampleRequest;
  readback?: SampleReadback;
  all?: HostBuffer;
  allDevice?: Allocation;
}

/** Fed-back tokens must name a row the previous step sampled on the device. */
function checkFeedback(batch: readonly SequenceStep[], sampledRows: boolean[] | null): void {
  batch.forEach((q, i) => {
    if (q.feedback === undefined) return;
    if (sampledRows === null || sampledRows[q.feedback] !== true) {
      throw new InvalidArgumentError(
        `batch[${i}].feedback`,
        sampledRows === null
          ? 'no feedback: the previous step did not sample on the device (or a sleep came between)'
          : `a row in [0, ${sampledRows.length}) that the previous step sampled`,
        q.feedback,
      );
    }
  });
}

/** Decode batch-size buckets: 1, 2, 4, then every multiple of 8 (vLLM's capture sizes), up to `max`. */
export function graphBuckets(max: number): number[] {
  const out = [1, 2, 4];
  for (let b = 8; out[out.length - 1]! < max; b += 8) out.push(b);
  return out.filter((_b, i) => i === 0 || out[i - 1]! < max);
}

/**
 * Runs batches of sequences — some prefilling a chunk, some decoding — through the model against
 * the paged KV cache: the shape the scheduler drives. Owns the KV cache (tag `kv_cache`), the rotary
 * table (tag `meta`: it survives a level-2 sleep) and one planned workspace per batch-shape bucket
 * (tag `activations`). Steps run one at a time, in call order, all on `stream`.
 *
 * On CUDA the activations and the KV cache take the weights' dtype (bf16 or f16; logits f32), and a
 * step whose sequences all decode one token is padded to its batch bucket and replayed from a CUDA
 * graph captured for that bucket over one decode workspace of the largest bucket; other steps run
 * eagerly. Per step only the inputs cross to the device, and logits or sampled ids come back.
 */
export class ModelRunner {
  readonly config: ModelConfig;
  readonly model: DecoderModel;
  readonly kvCache: KvCache;
  readonly maxModelLen: number;
  readonly stream: Stream;
  /** CUDA: the batch buckets decode steps are padded to, each replayed from its graph (empty on the CPU). */
  readonly graphBuckets: readonly number[];
  /** CUDA: false with enforceEager (decode steps are still padded to their bucket). */
  readonly useGraphs: boolean;
  readonly #allocator: Allocator;
  readonly #rope: Allocation;
  readonly #cosSin: Tensor;
  readonly #scratch: Scratch;
  readonly #sampler: StepSampler;
  readonly #workspaces = new Map<string, Workspace>();
  /** Enqueues in call order (resolves when a step is enqueued, not when it completes). */
  #queue: Promise<unknown> = Promise.resolve();
  /** Results of enqueued steps not read back yet. */
  readonly #inflight = new Set<Promise<ExecuteResult>>();
  /** Completion events of finished steps, reused (each CUDA event keeps a notify stream). */
  readonly #events: Event[] = [];
  /** The step enqueued last: the one a fed-back token comes from. */
  #last:
    | { sampledRows: boolean[] | null; sampledIds?: Tensor; result: Promise<ExecuteResult> }
    | undefined;
  /**
   * Set when `activations` went to sleep since: the pipeline does not span a sleep (a fed-back
   * token names a step enqueued before it; the contract stays whether the ids wait on the host, as
   * now, or in device memory a sleep discards).
   */
  readonly #slept = { activations: false };
  #disposed = false;

  private constructor(
    o: ModelRunnerOptions,
    model: DecoderModel,
    kv: KvCache,
    rope: Allocation,
    maxLen: number,
    scratch: Scratch,
    buckets: number[],
  ) {
    this.config = o.config;
    this.model = model;
    this.kvCache = kv;
    this.stream = o.stream;
    this.maxModelLen = maxLen;
    this.graphBuckets = buckets;
    this.useGraphs = buckets.length > 0 && o.enforceEager !== true;
    this.#allocator = o.allocator;
    this.#rope = rope;
    this.#cosSin = rope.tensor('f32', [maxLen, o.config.headDim]);
    this.#scratch = scratch;
    this.#sampler = new StepSampler(o.allocator, o.config.vocabSize);
    // The hook holds only this flag, not the runner.
    const slept = this.#slept;
    o.allocator.onSleep('activations', () => {
      slept.activations = true;
    });
  }

  /** Builds the model over loaded weights, allocates the KV cache, the rotary table and scratch. */
  static async create(options: ModelRunnerOptions): Promise<ModelRunner> {
    const c = options.config;
    const spec = architectureSpec(c.architecture);
    const model = new DecoderModel(spec, c, options.weights);
    const maxLen = options.maxModelLen ?? Math.min(c.maxPositionEmbeddings, 4096);
    if (!Number.isInteger(maxLen) || maxLen < 1)
      throw new InvalidArgumentError('maxModelLen', 'an integer >= 1', maxLen);
    if (!Number.isInteger(options.numKvBlocks) || options.numKvBlocks < 1) {
      throw new InvalidArgumentError('numKvBlocks', 'an integer >= 1', options.numKvBlocks);
    }
    const maxNumSeqs = options.maxNumSeqs ?? 256;
    if (!Number.isInteger(maxNumSeqs) || maxNumSeqs < 1)
      throw new InvalidArgumentError('maxNumSeqs', 'an integer >= 1', maxNumSeqs);
    const device = options.allocator.device;
    if (options.stream.device.name !== device.name) {
      throw new InvalidArgumentError(
        'stream.device',
        `the allocator's device (${device.name})`,
        options.stream.device.name,
      );
    }
    const cuda = device.kind === 'cuda';
    const dtypes = cuda ? ['bf16', 'f16'] : ['f32', 'bf16'];
    if (!dtypes.includes(model.dtype)) {
      throw new InvalidArgumentError(
        'weights',
        `${dtypes.join(' or ')} weights on ${cuda ? 'CUDA' : 'the CPU'} (see loadWeights' dtype)`,
        model.dtype,
      );
    }
    const blockSize = options.blockSize ?? 16;
    const table = ropeCosSinCache({
      rotaryDim: c.headDim,
      theta: c.ropeTheta,
      maxPositions: maxLen,
      scaling: c.ropeScaling,
    });
    const a = options.allocator;
    // `meta` (keep): a level-2 sleep discards `weights`, and nothing reloads this derived table.
    const rope = a.alloc(table.byteLength, { tag: 'meta', owner: 'rope.cos_sin' });
    const made: Allocation[] = [rope];
    let kv: KvCache | undefined;
    try {
      await rope.write(0, table);
      kv = KvCache.create(a, {
        numLayers: c.numLayers,
        numKvHeads: c.numKvHeads,
        headDim: c.headDim,
        numBlocks: options.numKvBlocks,
        blockSize,
        dtype: cuda ? model.dtype : 'f32',
      });
      const buckets = cuda ? graphBuckets(maxNumSeqs) : [];
      const scratch = await allocateScratch(a, c, {
        blockSize,
        maxModelLen: maxLen,
        maxDecodeTokens: buckets[buckets.length - 1] ?? maxNumSeqs,
      });
      made.push(...scratch.allocations);
      a.registerStream(options.stream);
      return new ModelRunner(options, model, kv, rope, maxLen, scratch, buckets);
    } catch (err) {
      kv?.dispose();
      for (const m of made) a.free(m);
      throw err;
    }
  }

  /**
   * Runs one step and resolves with the logits (or samples) of each sequence's last token. Steps
   * are enqueued in call order; a step is enqueued as soon as the one before it is (its inputs
   * staged, uploaded and its kernels queued on the stream), not when that one's results are
   * back, so calling execute for step N+1 before step N resolved keeps the device busy. A step
   * that reads logits back (no `sample`, or `logits: true`, or `allLogits`) first waits for the
   * steps in flight.
   */
  execute(batch: readonly SequenceStep[], options: ExecuteOptions = {}): Promise<ExecuteResult> {
    const enqueued = this.#queue.then(() => this.#enqueue(batch, options));
    this.#queue = enqueued.then(
      () => undefined,
      () => undefined,
    );
    return enqueued.then((step) => step.result);
  }

  // Wrapped in an object: a bare promise would be awaited by the queue (serializing the steps).
  async #enqueue(
    batch: readonly SequenceStep[],
    options: ExecuteOptions,
  ): Promise<{ result: Promise<ExecuteResult> }> {
    // No feedback across a sleep of `activations` (see #slept); a step that fails here leaves
    // nothing to feed back from either.
    const last = this.#slept.activations ? undefined : this.#last;
    this.#slept.activations = false;
    this.#last = undefined;
    if (this.#disposed)
      throw new InvalidArgumentError('runner', 'a live ModelRunner', 'a disposed one');
    for (const tag of ['weights', 'kv_cache', 'activations']) {
      if (this.#allocator.isAsleep(tag))
        throw new AsleepError(`cannot run the model while tag "${tag}" is asleep; wake it first`);
    }
    const tokens = validateBatch(batch, {
      vocabSize: this.config.vocabSize,
      maxModelLen: this.maxModelLen,
      blockSize: this.kvCache.blockSize,
      numBlocks: this.kvCache.numBlocks,
    });
    const n = batch.length;
    const sampleReq = options.sample;
    const numTop = sampleReq === undefined ? 0 : StepSampler.validate(sampleReq, n);
    checkFeedback(batch, last?.sampledRows ?? null);
    const timeoutMs = options.timeoutMs ?? 300_000;
    const wantLogits = options.logits ?? sampleReq === undefined;
    const grow = sampleReq !== undefined && this.#sampler.needsGrow(n, numTop);
    let steps = batch;
    if (wantLogits || options.allLogits === true || grow) {
      // This step reads back into memory that steps in flight may still read back into (the
      // logits), or replaces memory they use (the sampler's outputs): let them finish first. The
      // tokens it feeds back are then on the host.
      await Promise.allSettled(this.#inflight);
      if (batch.some((q) => q.feedback !== undefined)) {
        const ids = (await last!.result).sampled!.tokenIds;
        steps = batch.map((q) =>
          q.feedback === undefined
            ? q
            : {
                tokens: [...q.tokens, ids[q.feedback]!],
                blockTable: q.blockTable,
                contextLength: q.contextLength,
              },
        );
      }
      if (grow) this.#sampler.grow(n, numTop);
    }
    const s = this.stream;
    const cuda = s.device.kind === 'cuda';
    // A pure decode batch on CUDA is padded to its bucket, eagerly too, so that a replay and an
    // eager run of the same batch compute exactly the same thing. (Steps that return every
    // token's logits run eagerly at their own size.)
    const decode = cuda && tokens === n && options.allLogits !== true;
    const pad = decode ? this.graphBuckets.find((b) => b >= n) : undefined;
    const rows = pad ?? n;
    const ws = pad === undefined ? this.#workspace(tokens, n) : this.#decodeWorkspace();
    await ws.nextStaging(timeoutMs);
    const fed = stageInputs(ws, steps, this.kvCache.blockSize, rows);
    const v = this.config.vocabSize;
    const step: InFlight = { n, v, wantLogits, timeoutMs, ws };
    try {
      // With the tokens the previous step sampled (where its sampler wrote them, not yet read by
      // the host) going into this step's input ids.
      ws.upload(
        s,
        rows,
        fed.dst.length > 0
          ? { dstIndex: fed.dst, src: last!.sampledIds!, srcIndex: fed.src }
          : undefined,
      );
      let allT: Tensor | undefined;
      if (options.allLogits) {
        step.all = HostBuffer.alloc(tokens * v * 4, cuda ? { device: s.device } : {});
        if (cuda) {
          step.allDevice = this.#allocator.alloc(tokens * v * 4, {
            tag: 'activations',
            owner: 'logits.all',
          });
          allT = step.allDevice.tensor('f32', [tokens, v]);
        } else {
          allT = new Tensor({ ptr: step.all.ptr, dtype: 'f32', shape: [tokens, v], device: 'cpu' });
        }
      }
      const shape = { tokens: pad ?? tokens, seqs: rows };
      const fwd =
        pad === undefined ? this.#scratch.options : { ...this.#scratch.options, decode: true };
      const forward = () => this.model.forward(s, ws, this.kvCache, this.#cosSin, shape, allT, fwd);
      if (allT !== undefined) {
        // The per-token logits output is a fresh buffer each call: such steps run eagerly.
        forward();
      } else if (!cuda) {
        // On CPU a step's ~100 kernels replay as one captured graph per batch shape.
        ws.graph(s, `${tokens}x${n}`, forward).launch(s);
      } else if (pad !== undefined && this.useGraphs) {
        const key = `decode${pad}`;
        if (!ws.hasGraph(key)) forward(); // first use: modules, handles and plans load outside capture
        ws.graph(s, key, forward).launch(s);
      } else {
        forward();
      }
      if (sampleReq !== undefined) {
        step.readback = this.#sampler.enqueue(s, ws.logits.slice(0, 0, n), sampleReq);
        step.sample = sampleReq;
      }
      if (wantLogits) s.copy(ws.hostLogits.ptr, ws.logits.ptr, n * v * 4);
      if (step.allDevice) s.copy(step.all!.ptr, step.allDevice.ptr, tokens * v * 4);
      step.done = s.record(this.#events.pop());
    } catch (err) {
      await this.#release(step, true);
      throw err;
    }
    const result = this.#complete(step);
    this.#inflight.add(result);
    result.then(
      () => this.#inflight.delete(result),
      () => this.#inflight.delete(result),
    );
    this.#last = {
      sampledRows: sampleReq ? sampleReq.rows.map((r) => r !== null) : null,
      ...(step.readback ? { sampledIds: step.readback.sampledIds } : {}),
      result,
    };
    return { result };
  }

  /** Waits for an enqueued step's event, then reads its results back. */
  async #complete(step: InFlight): Promise<ExecuteResult> {
    let ok = false;
    try {
      await step.done!.wait({ timeoutMs: step.timeoutMs });
      const { n, v, ws } = step;
      const result: ExecuteResult = {
        logits: step.wantLogits
          ? ws.hostView(ws.hostLogits, Float32Array).slice(0, n * v)
          : new Float32Array(0),
      };
      if (step.all) result.allLogits = new Float32Array(step.all.buffer.slice(0));
      if (step.readback) {
        result.sampled = this.#sampler.read(step.readback, step.sample!);
        step.readback = undefined;
      }
      ok = true;
      return result;
    } finally {
      await this.#release(step, !ok);
    }
  }

  /** Frees what one step allocated; after a failure, once the stream stopped touching it. */
  async #release(step: InFlight, failed: boolean): Promise<void> {
    if (failed) await this.stream.synchronize({ timeoutMs: step.timeoutMs }).catch(() => undefined);
    if (step.readback) this.#sampler.release(step.readback);
    if (step.allDevice) this.#allocator.free(step.allDevice);
    step.all?.dispose();
    // A failed wait may still have a waiter on the event: do not reuse it.
    if (failed) step.done?.dispose();
    else if (step.done) this.#events.push(step.done);
  }

  #workspace(tokens: number, seqs: number): Workspace {
    const t = bucket(tokens, 16);
    const b = bucket(seqs, 4);
    return this.#plan(`${t}x${b}`, t, b);
  }

  // One workspace of the largest bucket serves every decode bucket (graphs use its first rows).
  #decodeWorkspace(): Workspace {
    const b = this.graphBuckets[this.graphBuckets.length - 1]!;
    return this.#plan('decode', b, b, this.graphBuckets.length);
  }

  #plan(key: string, tokens: number, seqs: number, maxGraphs?: number): Workspace {
    let ws = this.#workspaces.get(key);
    if (!ws) {
      const c = this.config;
      ws = new Workspace(this.#allocator, {
        tokens,
        seqs,
        maxBlocksPerSeq: Math.ceil(this.maxModelLen / this.kvCache.blockSize),
        hidden: c.hiddenSize,
        qWidth: c.numHeads * c.headDim,
        kvWidth: c.numKvHeads * c.headDim,
        intermediate: c.intermediateSize,
        vocab: c.vocabSize,
        dtype: this.kvCache.dtype,
        ...(maxGraphs === undefined ? {} : { maxGraphs }),
      });
      this.#workspaces.set(key, ws);
    }
    return ws;
  }

  /** CUDA graphs captured so far (decode buckets used). */
  get graphCount(): number {
    let n = 0;
    if (this.stream.device.kind !== 'cuda') return 0;
    for (const ws of this.#workspaces.values()) n += ws.graphCount;
    return n;
  }

  /** Frees the KV cache, workspaces, scratch and rotary table. Waits for queued steps first. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    await this.#queue;
    await Promise.allSettled(this.#inflight);
    await this.stream.synchronize();
    this.#disposed = true;
    for (const ws of this.#workspaces.values()) ws.dispose();
    this.#workspaces.clear();
    for (const e of this.#events.splice(0)) e.dispose();
    this.#sampler.dispose();
    this.kvCache.dispose();
    for (const a of this.#scratch.allocations) this.#allocator.free(a);
    this.#allocator.free(this.#rope);
    this.#allocator.unregisterStream(this.stream);
  }
}
