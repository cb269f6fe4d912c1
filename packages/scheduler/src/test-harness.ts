/**
 * Test-only helpers (not exported by the package): a fake worker that applies SchedulerOutput
 * diffs exactly as a real one must, simulates KV memory so wrong prefix hits, forks or stale
 * KV after a discard are caught, and samples deterministic tokens.
 */
import type { Scheduler } from './scheduler.js';
import type {
  ModelOutput,
  RequestInput,
  RequestOutput,
  SchedulerOutput,
} from './scheduler-types.js';

const POISON = -1;

interface WorkerRequest {
  /** Prompt, confirmed output, then tokens this worker sampled that are not confirmed yet. */
  tokens: number[];
  /** How many of `tokens` the scheduler has confirmed (sent). */
  confirmed: number;
  blocks: number[];
  computed: number;
  prefix: number[];
}

function mix(h: number, x: number): number {
  return Math.imul(h ^ x, 0x01000193) >>> 0;
}

function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = mix(h, s.charCodeAt(i));
  return h;
}

/** A worker mirror: throws on any protocol violation or any read of wrong KV. */
export class FakeWorker {
  readonly reqs = new Map<string, WorkerRequest>();
  readonly kv: Int32Array;
  steps = 0;

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
    readonly vocab = 50,
    readonly eos = 0,
  ) {
    this.kv = new Int32Array(numBlocks * blockSize).fill(POISON);
  }

  /** KV "value" at position i: a hash of tokens[0..i], like real KV depends on the prefix. */
  private prefixValue(r: WorkerRequest, i: number): number {
    while (r.prefix.length <= i) {
      const j = r.prefix.length;
      r.prefix.push(mix(j === 0 ? 0x811c9dc5 : r.prefix[j - 1]!, r.tokens[j]!) & 0x7fffffff);
    }
    return r.prefix[i]!;
  }

  private slot(r: WorkerRequest, pos: number): number {
    const b = r.blocks[Math.floor(pos / this.blockSize)];
    if (b === undefined) throw new Error(`no block for position ${pos}`);
    return b * this.blockSize + (pos % this.blockSize);
  }

  /** Runs one step; returns the sampled tokens. */
  execute(out: SchedulerOutput, sampleToken?: (id: string, tokens: number[]) => number) {
    this.steps++;
    for (const id of out.finishedRequestIds) this.reqs.delete(id);
    for (const n of out.newRequests) {
      if (this.reqs.has(n.requestId)) throw new Error(`${n.requestId} sent in full twice`);
      const tokens = [...n.promptTokenIds, ...n.outputTokenIds];
      this.reqs.set(n.requestId, {
        tokens,
        confirmed: tokens.length,
        blocks: [...n.blockIds],
        computed: n.numComputedTokens,
        prefix: [],
      });
    }
    for (const c of out.cachedRequests) {
      const r = this.reqs.get(c.requestId);
      if (!r) throw new Error(`${c.requestId} sent as cached but unknown to the worker`);
      // The worker appended what it sampled; the diff confirms exactly those tokens, in order.
      for (const t of c.newTokenIds) {
        if (r.tokens[r.confirmed] !== t) {
          throw new Error(
            `${c.requestId}: confirmed ${t}, worker sampled ${r.tokens[r.confirmed]}`,
          );
        }
        r.confirmed++;
      }
      r.blocks.push(...c.newBlockIds);
      if (r.computed !== c.numComputedTokens) {
        throw new Error(
          `${c.requestId}: worker computed ${r.computed}, scheduler ${c.numComputedTokens}`,
        );
      }
    }
    const sampled: ModelOutput['sampled'] = [];
    let total = 0;
    for (const d of [...out.newRequests, ...out.cachedRequests]) {
      const r = this.reqs.get(d.requestId)!;
      const start = d.numComputedTokens;
      const end = start + d.numScheduledTokens;
      total += d.numScheduledTokens;
      if (end > r.tokens.length) throw new Error(`${d.requestId}: scheduled past known tokens`);
      if (d.sample !== (end === r.tokens.length))
        throw new Error(`${d.requestId}: wrong sample flag`);
      // Attention reads every earlier position: it must hold this sequence's KV.
      for (let p = 0; p < start; p++) {
        const got = this.kv[this.slot(r, p)];
        if (got !== this.prefixValue(r, p)) {
          throw new Error(
            `${d.requestId}: stale KV at position ${p} (block ${r.blocks[Math.floor(p / this.blockSize)]})`,
          );
        }
      }
      for (let p = start; p < end; p++) this.kv[this.slot(r, p)] = this.prefixValue(r, p);
      r.computed = end;
      if (d.sample) {
        const token = sampleToken
          ? sampleToken(d.requestId, r.tokens)
          : this.defaultToken(d.requestId, r);
        r.tokens.push(token);
        sampled.push({
          requestId: d.requestId,
          tokenIds: [token],
          logprobs: [
            { logprob: -token / 100, rank: 1, topTokenIds: [token], topLogprobs: [-token / 100] },
          ],
        });
      }
    }
    if (total !== out.totalNumScheduledTokens) throw new Error('totalNumScheduledTokens mismatch');
    return { stepId: out.stepId, sampled };
  }

  private defaultToken(id: string, r: WorkerRequest): number {
    return mix(this.prefixValue(r, r.tokens.length - 1), hashString(id)) % this.vocab;
  }

  /** Level-1/2 sleep discarded KV memory: poison it (never zeros). */
  discardKv(): void {
    this.kv.fill(POISON);
  }
}

/** Runs schedule → execute → update until nothing is left; returns outputs by request id. */
export function runToCompletion(
  s: Scheduler,
  w: FakeWorker,
  options: { maxSteps?: number; onStep?: (step: number) => void } = {},
): Map<string, number[]> {
  const tokens = new Map<string, number[]>();
  const maxSteps = options.maxSteps ?? 100_000;
  for (let step = 0; s.hasUnfinishedRequests; step++) {
    if (step >= maxSteps) throw new Error(`not done after ${maxSteps} steps`);
    options.onStep?.(step);
    const out = s.schedule();
    if (out.totalNumScheduledTokens === 0 && s.numStepsInFlight === 0) {
      if (!s.hasUnfinishedRequests) break;
      if (s.isPaused) break;
      throw new Error('scheduler made no progress');
    }
    collect(tokens, s.update(w.execute(out)));
  }
  return tokens;
}

/** Appends every RequestOutput's new tokens to `into`. */
export function collect(into: Map<string, number[]>, outs: RequestOutput[]): void {
  for (const o of outs) {
    const t = into.get(o.requestId) ?? [];
    t.push(...o.newTokenIds);
    into.set(o.requestId, t);
  }
}

/** A prompt of `len` tokens from `seed` (tokens 1…vocab-1, never eos 0). */
export function prompt(seed: number, len: number, vocab = 50): number[] {
  const out: number[] = [];
  let h = mix(0x811c9dc5, seed);
  for (let i = 0; i < len; i++) {
    h = mix(h, i);
    out.push(1 + (h % (vocab - 1)));
  }
  return out;
}

/** Shorthand RequestInput. */
export function req(requestId: string, promptTokenIds: number[], maxTokens = 8): RequestInput {
  return { requestId, promptTokenIds, sampling: { maxTokens } };
}
