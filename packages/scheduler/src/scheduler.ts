import { InvalidArgumentError } from '@x/core';
import { BlockPool } from './block-pool.js';
import { ForkGroups } from './fork-groups.js';
import { KVCacheManager } from './kv-cache-manager.js';
import { type PauseMode, PauseState, SchedulerStateError, type SleepLevel } from './pause-state.js';
import { Request } from './request.js';
import { validateRequestInput } from './request-input.js';
import { comparePriority, createRequestQueue, type RequestQueue } from './request-queue.js';
import type {
  ModelOutput,
  RequestInput,
  RequestOutput,
  SchedulerOptions,
  SchedulerOutput,
  SchedulerStats,
} from './scheduler-types.js';
import { buildStepOutput, type Scheduled, validateModelOutput } from './step-output.js';
import { checkStop, type Detokenize, StopStringMatcher } from './stop-checker.js';

function positiveInt(name: string, value: unknown, fallback?: number): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new InvalidArgumentError(name, 'an integer >= 1', v);
  }
  return v;
}

/**
 * Continuous batching over a paged KV cache: every step spends a token budget on running
 * requests first (decodes and prefill chunks), then admits waiting ones; preempts by recompute
 * when blocks run out; emits a diff for the workers; applies sampled tokens and stop conditions.
 * Single-threaded and synchronous: the engine core loop owns it. See README.md for the protocol.
 */
export class Scheduler {
  readonly pool: BlockPool;
  readonly maxModelLen: number;
  readonly maxNumSeqs: number;
  readonly maxNumBatchedTokens: number;
  private readonly kv: KVCacheManager;
  private readonly waiting: RequestQueue;
  private running: Request[] = [];
  private readonly requests = new Map<string, Request>();
  private readonly groups: ForkGroups;
  private readonly pending = new Map<number, Request[]>();
  private readonly pauseState = new PauseState();
  private finishedIds: string[] = [];
  private nextStepId = 0;
  private nextSeq = 0;
  private preemptions = 0;
  private readonly eosTokenIds: readonly number[];
  private readonly detokenize: Detokenize | undefined;
  private readonly now: () => number;
  private readonly policy: 'fcfs' | 'priority';
  private readonly asyncScheduling: boolean;

  constructor(options: SchedulerOptions) {
    this.maxModelLen = positiveInt('maxModelLen', options.maxModelLen);
    this.maxNumSeqs = positiveInt('maxNumSeqs', options.maxNumSeqs, 256);
    this.maxNumBatchedTokens = positiveInt(
      'maxNumBatchedTokens',
      options.maxNumBatchedTokens,
      8192,
    );
    const policy = options.policy ?? 'fcfs';
    if (policy !== 'fcfs' && policy !== 'priority') {
      throw new InvalidArgumentError('policy', "'fcfs' or 'priority'", policy);
    }
    this.pool = new BlockPool({
      numBlocks: options.numBlocks,
      blockSize: options.blockSize ?? 16,
      enablePrefixCaching: options.enablePrefixCaching ?? true,
    });
    if (this.pool.numBlocks * this.pool.blockSize < this.maxModelLen) {
      throw new InvalidArgumentError(
        'numBlocks',
        `at least ${Math.ceil(this.maxModelLen / this.pool.blockSize)} blocks to hold one sequence of maxModelLen ${this.maxModelLen}`,
        options.numBlocks,
      );
    }
    this.kv = new KVCacheManager(this.pool);
    this.waiting = createRequestQueue(policy);
    this.groups = new ForkGroups(this.waiting);
    this.policy = policy;
    this.eosTokenIds = [...(options.eosTokenIds ?? [])];
    this.detokenize = options.detokenize;
    this.now = options.now ?? Date.now;
    this.asyncScheduling = options.asyncScheduling ?? false;
  }

  /** running | pausing | paused | sleeping. */
  get state() {
    return this.pauseState.state;
  }

  /** Level of the current sleep, or null. */
  get sleepLevel(): SleepLevel | null {
    return this.pauseState.sleepLevel;
  }

  /** False after a level-2 sleep until markWeightsLoaded(). */
  get weightsValid(): boolean {
    return this.pauseState.weightsValid;
  }

  /** Paused or asleep: nothing is or will be in flight until resume(). */
  get isPaused(): boolean {
    return this.state === 'paused' || this.state === 'sleeping';
  }

  /** Unfinished requests exist (waiting, held or running). */
  get hasUnfinishedRequests(): boolean {
    return this.requests.size > 0;
  }

  /** Steps handed out by schedule() and not yet passed to update(). */
  get numStepsInFlight(): number {
    return this.pending.size;
  }

  /** Ids (as given to addRequest) of every unfinished request, in no particular order. */
  unfinishedRequestIds(): string[] {
    const ids = new Set<string>();
    for (const r of this.requests.values()) ids.add(r.parentRequestId);
    return [...ids];
  }

  /** A request by id (a completion id for n > 1), if unfinished. */
  getRequest(requestId: string): Request | undefined {
    return this.requests.get(requestId);
  }

  /** Queues a request; returns one Request per completion (n of them). */
  addRequest(input: RequestInput): Request[] {
    const { requestId, promptTokenIds: prompt } = input;
    if (this.requests.has(requestId) || this.groups.has(requestId)) {
      throw new InvalidArgumentError(
        'requestId',
        'an id not used by an unfinished request',
        requestId,
      );
    }
    const { sampling, priority, eos, arrivalTime } = validateRequestInput(input, {
      maxModelLen: this.maxModelLen,
      eosTokenIds: this.eosTokenIds,
      hasDetokenize: this.detokenize !== undefined,
      now: this.now,
    });
    const n = sampling.n;
    const members: Request[] = [];
    for (let index = 0; index < n; index++) {
      const id = n === 1 ? requestId : `${index}_${requestId}`;
      if (this.requests.has(id)) {
        throw new InvalidArgumentError(
          'requestId',
          `an id whose completion id ${id} is free`,
          requestId,
        );
      }
      const r = new Request({
        requestId: id,
        parentRequestId: requestId,
        index,
        promptTokenIds: prompt,
        sampling,
        eosTokenIds: eos,
        priority,
        arrivalTime,
        seq: this.nextSeq++,
        hashExtras: input.cacheSalt ?? '',
        skipPrefixCache: input.skipPrefixCache ?? false,
        data: input.data,
      });
      if (sampling.stop.length > 0)
        r.stopMatcher = new StopStringMatcher(sampling.stop, this.detokenize!);
      members.push(r);
    }
    for (const r of members) this.requests.set(r.requestId, r);
    this.waiting.add(members[0]!);
    if (n > 1) {
      // Siblings wait until the first has computed the prompt, then fork its blocks.
      this.groups.add(requestId, members);
    }
    return members;
  }

  /**
   * Aborts a request (by the id given to addRequest, or one completion id) wherever it is:
   * waiting, held, running, mid-prefill, preempted or in flight. Frees its blocks; a late model
   * output for it is ignored. Unknown or finished ids return [] (aborts race with finishing).
   */
  abort(requestId: string): RequestOutput[] {
    const group = this.groups.members(requestId);
    const targets = group ? [...group] : [this.requests.get(requestId)];
    const out: RequestOutput[] = [];
    for (const r of targets) {
      if (!r || r.isFinished) continue;
      this.removeFromQueues(r);
      this.finish(r, 'abort', null);
      out.push(this.toOutput(r, [], null, 0));
    }
    if (out.length > 0) this.running = this.running.filter((r) => !r.isFinished);
    this.maybeQuiesce();
    return out;
  }

  /** Plans the next step. May be called again before the previous step's update() (overlap). */
  schedule(): SchedulerOutput {
    const stepId = this.nextStepId++;
    this.kv.commitCachedBlocks();
    const scheduled: Scheduled[] = [];
    let budget = this.maxNumBatchedTokens;
    let preempted = false;
    if (this.pauseState.steps) {
      for (let i = 0; i < this.running.length && budget > 0; ) {
        const r = this.running[i]!;
        const pending = r.inFlightSteps.length;
        const want = Math.min(r.numTokens + pending - r.numComputedTokens, budget);
        if ((pending > 0 && !this.runsAhead(r)) || want <= 0) {
          i++;
          continue;
        }
        let fits = true;
        while (!this.kv.allocateSlots(r, want)) {
          const victim = this.pickVictim();
          const vi = this.running.indexOf(victim);
          this.running.splice(vi, 1);
          const s = scheduled.findIndex((x) => x.request === victim);
          if (s >= 0) budget += scheduled.splice(s, 1)[0]!.numTokens;
          this.preempt(victim);
          preempted = true;
          if (victim === r) {
            fits = false;
            break;
          }
          if (vi < i) i--;
        }
        if (!fits) continue;
        scheduled.push({ request: r, numTokens: want });
        budget -= want;
        i++;
      }
    }
    if (this.pauseState.admits && !preempted) budget = this.admit(scheduled, budget);
    return this.buildOutput(stepId, scheduled);
  }

  /**
   * Applies a step's sampled tokens: appends them, checks stop conditions, frees finished
   * requests. Returns one RequestOutput per request that got a token. Outputs for requests that
   * were aborted or preempted meanwhile are ignored. Throws before changing anything if the
   * output does not match the step.
   */
  update(output: ModelOutput): RequestOutput[] {
    const expected = this.pending.get(output?.stepId);
    const sampled = validateModelOutput(output, expected, [...this.pending.keys()]);
    this.pending.delete(output.stepId);
    // Blocks this step filled become hits now, before a finishing request frees them.
    this.kv.commitCachedBlocks();
    const outs: RequestOutput[] = [];
    for (const s of sampled) {
      const r = this.requests.get(s.requestId);
      if (!r || r.inFlightSteps[0] !== output.stepId) continue;
      r.inFlightSteps.shift();
      const token = s.tokenIds[0]!;
      r.tokenIds.push(token);
      const stop = checkStop(r, this.maxModelLen);
      if (stop) {
        this.running.splice(this.running.indexOf(r), 1);
        this.finish(r, stop.reason, stop.stopReason);
      }
      outs.push(this.toOutput(r, [token], s.logprobs ?? null, stop?.trimChars ?? 0));
    }
    this.maybeQuiesce();
    return outs;
  }

  /**
   * Starts pausing (see PauseState). Mode 'abort' aborts every request now and returns them —
   * also when already paused, so requests kept by an earlier 'keep' can be dropped.
   */
  pause(mode: PauseMode): RequestOutput[] {
    const changed = this.pauseState.pause(mode);
    let out: RequestOutput[] = [];
    if (mode === 'abort' && (changed || this.isPaused)) {
      out = [...this.groups.parentIds(), ...this.requests.keys()].flatMap((id) => this.abort(id));
    }
    this.maybeQuiesce();
    return out;
  }

  /** Resumes scheduling from pausing or paused. Throws while asleep or weights are invalid. */
  resume(): void {
    this.pauseState.resume();
  }

  /** paused → sleeping. The engine then synchronizes its streams and sleeps the allocator. */
  sleep(level: SleepLevel): boolean {
    return this.pauseState.sleep(level);
  }

  /**
   * sleeping → paused. With `kvDiscarded` every kept request is preempted (it recomputes on
   * resume) and the prefix cache is reset, so no stale KV is ever read or hit.
   */
  wakeUp(options: { kvDiscarded: boolean }): boolean {
    const woke = this.pauseState.wakeUp();
    if (woke && options.kvDiscarded) this.invalidateKv();
    return woke;
  }

  /** Weights were reloaded after a level-2 sleep; resume() is allowed again. */
  markWeightsLoaded(): void {
    this.pauseState.markWeightsLoaded();
  }

  /** Weights are being rewritten (or a rewrite failed): resume() refuses until markWeightsLoaded(). */
  markWeightsInvalid(): void {
    this.pauseState.markWeightsInvalid();
  }

  /** KV contents are gone: preempt every running request and reset the prefix cache. Paused only. */
  invalidateKv(): void {
    if (!this.isPaused) {
      throw new SchedulerStateError('invalidateKv()', 'paused or sleeping', this.state);
    }
    for (const r of [...this.running].reverse()) this.preempt(r);
    this.running = [];
    this.pool.resetPrefixCache();
  }

  /** Forgets all cached prefixes (in-use blocks stay with their owners). Returns blocks uncached. */
  resetPrefixCache(): number {
    return this.pool.resetPrefixCache();
  }

  /** Gauges and counters for metrics. */
  stats(): SchedulerStats {
    const p = this.pool.stats();
    return {
      numRunning: this.running.length,
      numWaiting: this.waiting.size + this.groups.numHeld,
      numPreemptions: this.preemptions,
      kvCacheUsage: p.usage,
      numFreeBlocks: p.numFreeBlocks,
      prefixCacheQueries: p.prefixCacheQueries,
      prefixCacheHits: p.prefixCacheHits,
    };
  }

  /** Admits waiting requests while budget, seats and blocks last; returns the budget left. */
  private admit(scheduled: Scheduled[], budget: number): number {
    while (budget > 0 && this.waiting.size > 0 && this.running.length < this.maxNumSeqs) {
      const r = this.waiting.peek()!;
      let cached: number[] = [];
      const fresh = r.blockIds.length === 0;
      if (fresh) {
        const source = this.groups.forkSource(r);
        r.numComputedTokens = source ? this.kv.fork(r, source, r.numPromptTokens) : 0;
        if (r.numComputedTokens === 0 && !r.skipPrefixCache) cached = this.kv.findCachedPrefix(r);
      }
      const hitTokens = r.numComputedTokens + cached.length * this.pool.blockSize;
      const want = Math.min(r.numTokens - hitTokens, budget);
      if (!this.kv.allocateSlots(r, want, cached)) {
        this.kv.free(r);
        r.numComputedTokens = 0;
        break;
      }
      if (r.numCachedTokens < 0) {
        r.numCachedTokens = Math.min(hitTokens, r.numPromptTokens);
        this.pool.recordPrefixQuery(r.numTokens, hitTokens);
      }
      r.numComputedTokens = hitTokens;
      this.waiting.pop();
      r.status = 'running';
      this.running.push(r);
      scheduled.push({ request: r, numTokens: want });
      budget -= want;
    }
    return budget;
  }

  private buildOutput(stepId: number, scheduled: Scheduled[]): SchedulerOutput {
    const { output, sampling } = buildStepOutput(stepId, scheduled, this.finishedIds, (id) =>
      this.groups.release(id),
    );
    if (output.totalNumScheduledTokens > 0) this.pending.set(stepId, sampling);
    this.finishedIds = [];
    return output;
  }

  /**
   * Async scheduling: may `r`, whose last token is still being sampled, run one step ahead? Only
   * a decode (everything known is computed) with one token pending, and only if that token cannot
   * be its last by length (max_tokens, max_model_len) — a stop token may still waste one step.
   */
  private runsAhead(r: Request): boolean {
    return (
      this.asyncScheduling &&
      r.inFlightSteps.length === 1 &&
      r.numComputedTokens === r.numTokens &&
      r.numOutputTokens + 1 < r.sampling.maxTokens &&
      r.numTokens + 1 < this.maxModelLen
    );
  }

  /** Lowest-priority running request: the newest under FCFS, the largest key under priority. */
  private pickVictim(): Request {
    if (this.policy === 'fcfs') return this.running[this.running.length - 1]!;
    let v = this.running[0]!;
    for (const r of this.running) if (comparePriority(r, v) > 0) v = r;
    return v;
  }

  /** Frees a running request's blocks and queues it to recompute (caller removed it from running). */
  private preempt(r: Request): void {
    this.kv.free(r);
    r.numComputedTokens = 0;
    r.inFlightSteps.length = 0;
    r.status = 'preempted';
    r.numPreemptions++;
    this.preemptions++;
    if (r.sentToWorkers) {
      this.finishedIds.push(r.requestId);
      r.sentToWorkers = false;
    }
    this.waiting.prepend(r);
    this.groups.release(r.parentRequestId);
  }

  private finish(
    r: Request,
    reason: 'stop' | 'length' | 'abort',
    stopReason: number | string | null,
  ) {
    this.kv.free(r);
    r.status = 'finished';
    r.finishReason = reason;
    r.stopReason = stopReason;
    r.inFlightSteps.length = 0;
    this.requests.delete(r.requestId);
    if (r.sentToWorkers) this.finishedIds.push(r.requestId);
    // If the first sibling left before computing the prompt, the others stop waiting for it.
    this.groups.onFinish(r);
  }

  private removeFromQueues(r: Request): void {
    if (r.status === 'running') {
      this.running.splice(this.running.indexOf(r), 1);
      return;
    }
    if (!this.groups.unhold(r)) this.waiting.remove(r);
  }

  private toOutput(
    r: Request,
    newTokenIds: number[],
    newLogprobs: RequestOutput['newLogprobs'],
    stopTrimChars: number,
  ): RequestOutput {
    return {
      requestId: r.requestId,
      parentRequestId: r.parentRequestId,
      index: r.index,
      newTokenIds,
      newLogprobs,
      finishReason: r.finishReason,
      stopReason: r.stopReason,
      stopTrimChars,
      numPromptTokens: r.numPromptTokens,
      numOutputTokens: r.numOutputTokens,
      numCachedTokens: Math.max(0, r.numCachedTokens),
    };
  }

  private maybeQuiesce(): void {
    if (this.state !== 'pausing' || this.pending.size > 0) return;
    if (this.pauseState.mode === 'wait' && this.running.length > 0) return;
    this.pauseState.markPaused();
  }
}
