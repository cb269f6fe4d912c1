import { AsleepError, HostBuffer, InvalidArgumentError, type Stream, Tensor } from '@x/core';
import type { Allocation, Allocator } from '@x/cumem';
import { ropeCosSinCache } from '@x/kernels';
import type { ModelConfig } from './config.js';
import type { WeightSource } from './models/architecture.js';
import { DecoderModel } from './models/decoder.js';
import { KvCache } from './models/kv-cache.js';
import { architectureSpec } from './models/registry.js';
import { bucket, Workspace } from './models/workspace.js';

/** One sequence of a step: a prefill chunk (several tokens) or a decode token. */
export interface SequenceStep {
  /** Token ids this step feeds (≥ 1). */
  tokens: readonly number[];
  /** The sequence's KV blocks in order; must cover `contextLength` tokens. */
  blockTable: readonly number[];
  /** Tokens of the sequence in the cache after this step, including `tokens`. */
  contextLength: number;
}

/** Options of {@link ModelRunner.execute}. */
export interface ExecuteOptions {
  /** Also return the logits of every token of the step ([T, V]; tests and prompt logprobs). */
  allLogits?: boolean;
  /** Bound on waiting for the stream (ms); default 300 000. */
  timeoutMs?: number;
}

/** Logits of a step. */
export interface ExecuteResult {
  /** [B, V] row-major: the logits after the last token of each sequence. */
  logits: Float32Array;
  /** [T, V] when asked for: the logits after every token, in batch order. */
  allLogits?: Float32Array;
}

/** Options of {@link ModelRunner.create}. */
export interface ModelRunnerOptions {
  config: ModelConfig;
  /** Loaded weights (HF names), e.g. from loadWeights. */
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
}

/**
 * Runs batches of sequences — some prefilling a chunk, some decoding — through the model against
 * the paged KV cache: the shape the scheduler drives. Owns the KV cache (tag `kv_cache`), the rotary
 * table (tag `meta`: it survives a level-2 sleep) and one planned workspace per batch-shape bucket
 * (tag `activations`).
 * Steps run one at a time, in call order.
 */
export class ModelRunner {
  readonly config: ModelConfig;
  readonly model: DecoderModel;
  readonly kvCache: KvCache;
  readonly maxModelLen: number;
  readonly stream: Stream;
  readonly #allocator: Allocator;
  readonly #rope: Allocation;
  readonly #cosSin: Tensor;
  readonly #workspaces = new Map<string, Workspace>();
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;

  private constructor(
    o: ModelRunnerOptions,
    model: DecoderModel,
    kv: KvCache,
    rope: Allocation,
    maxLen: number,
  ) {
    this.config = o.config;
    this.model = model;
    this.kvCache = kv;
    this.stream = o.stream;
    this.maxModelLen = maxLen;
    this.#allocator = o.allocator;
    this.#rope = rope;
    this.#cosSin = rope.tensor('f32', [maxLen, o.config.headDim]);
  }

  /** Builds the model over loaded weights, allocates the KV cache and the rotary table. */
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
    const table = ropeCosSinCache({
      rotaryDim: c.headDim,
      theta: c.ropeTheta,
      maxPositions: maxLen,
      scaling: c.ropeScaling,
    });
    // `meta` (keep): a level-2 sleep discards `weights`, and nothing reloads this derived table.
    const rope = options.allocator.alloc(table.byteLength, {
      tag: 'meta',
      owner: 'rope.cos_sin',
    });
    await rope.write(0, table);
    const kv = KvCache.create(options.allocator, {
      numLayers: c.numLayers,
      numKvHeads: c.numKvHeads,
      headDim: c.headDim,
      numBlocks: options.numKvBlocks,
      blockSize: options.blockSize ?? 16,
    });
    options.allocator.registerStream(options.stream);
    return new ModelRunner(options, model, kv, rope, maxLen);
  }

  /** Runs one step and resolves with the logits of each sequence's last token. */
  execute(batch: readonly SequenceStep[], options: ExecuteOptions = {}): Promise<ExecuteResult> {
    const run = this.#queue.then(() => this.#execute(batch, options));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #execute(batch: readonly SequenceStep[], options: ExecuteOptions): Promise<ExecuteResult> {
    if (this.#disposed)
      throw new InvalidArgumentError('runner', 'a live ModelRunner', 'a disposed one');
    for (const tag of ['weights', 'kv_cache', 'activations']) {
      if (this.#allocator.isAsleep(tag))
        throw new AsleepError(`cannot run the model while tag "${tag}" is asleep; wake it first`);
    }
    const tokens = this.#validate(batch);
    const seqs = batch.length;
    const ws = this.#workspace(tokens, seqs);
    this.#stage(ws, batch);
    const v = this.config.vocabSize;
    let all: HostBuffer | undefined;
    let allT: Tensor | undefined;
    if (options.allLogits) {
      all = HostBuffer.alloc(tokens * v * 4);
      allT = new Tensor({ ptr: all.ptr, dtype: 'f32', shape: [tokens, v], device: 'cpu' });
    }
    try {
      const shape = { tokens, seqs };
      const forward = () =>
        this.model.forward(this.stream, ws, this.kvCache, this.#cosSin, shape, allT);
      // On CPU a step's ~100 kernels replay as one captured graph per batch shape; the per-token
      // logits output (allT) is a fresh buffer each call, so those steps run eagerly.
      if (allT === undefined && this.stream.device.kind === 'cpu') {
        ws.graph(this.stream, `${tokens}x${seqs}`, forward).launch(this.stream);
      } else {
        forward();
      }
      this.stream.copy(ws.hostLogits.ptr, ws.logits.ptr, seqs * v * 4);
      await this.stream.synchronize(
        options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs },
      );
      const logits = ws.hostView(ws.hostLogits, Float32Array).slice(0, seqs * v);
      return all ? { logits, allLogits: new Float32Array(all.buffer.slice(0)) } : { logits };
    } finally {
      all?.dispose();
    }
  }

  #validate(batch: readonly SequenceStep[]): number {
    if (!Array.isArray(batch) || batch.length === 0)
      throw new InvalidArgumentError('batch', 'a non-empty array of SequenceStep', batch);
    const bs = this.kvCache.blockSize;
    let tokens = 0;
    batch.forEach((s, i) => {
      const at = `batch[${i}]`;
      if (!Array.isArray(s?.tokens) || s.tokens.length === 0)
        throw new InvalidArgumentError(`${at}.tokens`, 'a non-empty array of token ids', s?.tokens);
      s.tokens.forEach((id: number, j: number) => {
        if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) {
          throw new InvalidArgumentError(
            `${at}.tokens[${j}]`,
            `a token id in [0, ${this.config.vocabSize})`,
            id,
          );
        }
      });
      if (
        !Number.isInteger(s.contextLength) ||
        s.contextLength < s.tokens.length ||
        s.contextLength > this.maxModelLen
      ) {
        throw new InvalidArgumentError(
          `${at}.contextLength`,
          `an integer in [${s.tokens.length}, ${this.maxModelLen}] (tokens .. maxModelLen)`,
          s.contextLength,
        );
      }
      const need = Math.ceil(s.contextLength / bs);
      if (!Array.isArray(s.blockTable) || s.blockTable.length < need) {
        throw new InvalidArgumentError(
          `${at}.blockTable`,
          `at least ${need} block ids (contextLength ${s.contextLength} / blockSize ${bs})`,
          s.blockTable?.length,
        );
      }
      for (let j = 0; j < need; j++) {
        const blk = s.blockTable[j];
        if (!Number.isInteger(blk) || blk! < 0 || blk! >= this.kvCache.numBlocks) {
          throw new InvalidArgumentError(
            `${at}.blockTable[${j}]`,
            `a block id in [0, ${this.kvCache.numBlocks})`,
            blk,
          );
        }
      }
      tokens += s.tokens.length;
    });
    return tokens;
  }

  #workspace(tokens: number, seqs: number): Workspace {
    const t = bucket(tokens, 16);
    const b = bucket(seqs, 4);
    const key = `${t}x${b}`;
    let ws = this.#workspaces.get(key);
    if (!ws) {
      const c = this.config;
      ws = new Workspace(this.#allocator, {
        tokens: t,
        seqs: b,
        maxBlocksPerSeq: Math.ceil(this.maxModelLen / this.kvCache.blockSize),
        hidden: c.hiddenSize,
        qWidth: c.numHeads * c.headDim,
        kvWidth: c.numKvHeads * c.headDim,
        intermediate: c.intermediateSize,
        vocab: c.vocabSize,
      });
      this.#workspaces.set(key, ws);
    }
    return ws;
  }

  // Writes the step's inputs into host staging; the stream reads them when the kernels run.
  #stage(ws: Workspace, batch: readonly SequenceStep[]): void {
    const ids = ws.hostView(ws.ids, Int32Array);
    const pos = ws.hostView(ws.positions, Int32Array);
    const slots = ws.hostView(ws.slots, BigInt64Array);
    const tables = ws.hostView(ws.blockTables, Int32Array);
    const seqLens = ws.hostView(ws.seqLens, Int32Array);
    const qsl = ws.hostView(ws.queryStartLoc, Int32Array);
    const last = ws.hostView(ws.lastIndex, Int32Array);
    const bs = this.kvCache.blockSize;
    const mb = ws.shape.maxBlocksPerSeq;
    let t = 0;
    qsl[0] = 0;
    batch.forEach((s, b) => {
      const start = s.contextLength - s.tokens.length;
      s.tokens.forEach((id: number, j: number) => {
        const p = start + j;
        ids[t] = id;
        pos[t] = p;
        slots[t] = BigInt(s.blockTable[Math.floor(p / bs)]! * bs + (p % bs));
        t++;
      });
      tables.fill(0, b * mb, (b + 1) * mb);
      for (let j = 0; j < Math.min(mb, s.blockTable.length); j++)
        tables[b * mb + j] = s.blockTable[j]!;
      seqLens[b] = s.contextLength;
      qsl[b + 1] = t;
      last[b] = t - 1;
    });
  }

  /** Frees the KV cache, workspaces and rotary table. Waits for queued steps first. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    await this.#queue;
    await this.stream.synchronize();
    this.#disposed = true;
    for (const ws of this.#workspaces.values()) ws.dispose();
    this.#workspaces.clear();
    this.kvCache.dispose();
    this.#allocator.free(this.#rope);
    this.#allocator.unregisterStream(this.stream);
  }
}
