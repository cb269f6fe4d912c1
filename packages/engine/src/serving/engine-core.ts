import { InvalidArgumentError, TimeoutError } from '@x/core';
import {
  type PauseMode,
  type RequestOutput,
  Scheduler,
  type SchedulerOutput,
  type SchedulingPolicy,
} from '@x/scheduler';
import { ConditionWaiters } from './condition-waiters.js';
import { EngineDeadError, EngineUnavailableError } from './errors.js';
import type { Executor, ExecutorMemory, ExecutorOutput } from './executor.js';
import { OutputProcessor } from './output-processor.js';
import { validateEngineRequest } from './request-validation.js';
import { resolveSamplerParams, schedulerSampling } from './sampling-params.js';
import { SeedSource } from './seed-source.js';
import type { TextDecoder } from './text-decoder.js';
import type {
  AbortReason,
  CompletionOutput,
  EngineRequest,
  EngineStats,
  EngineStatus,
} from './types.js';

/** Options of an EngineCore. */
export interface EngineCoreOptions {
  executor: Executor;
  decoder: TextDecoder;
  /** The served model's directory (the default source of POST /reload_weights). */
  modelDir: string;
  maxModelLen: number;
  vocabSize: number;
  eosTokenIds: readonly number[];
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  enablePrefixCaching?: boolean;
  policy?: SchedulingPolicy;
  /** Seeds the draws of requests without a seed (vLLM --seed). Default: random. */
  seed?: number;
  /** Every step's outputs, in order. Called in the engine-core thread. */
  onOutputs: (outputs: CompletionOutput[]) => void;
  /** The loop failed: the engine is dead (status().dead). */
  onFatal?: (error: Error) => void;
  /** Default drain bound of pause('wait') before it escalates to 'abort' (ms). Default 30 000. */
  drainTimeoutMs?: number;
  /** Bound on stream synchronization and quiescing (ms). Default 60 000. */
  syncTimeoutMs?: number;
  /** Steps handed to the executor before the oldest is awaited (overlap). Default 2. */
  maxStepsInFlight?: number;
  /**
   * Schedule each decode one step ahead on the token still being sampled, so step N's update
   * and output processing overlap step N+1's forward pass (Scheduler asyncScheduling). Default true.
   */
  asyncScheduling?: boolean;
}

/** Options of EngineCore.sleep. */
export interface EngineSleepOptions {
  level?: 1 | 2;
  tags?: string[];
  /** How requests in flight end first: 'abort' (default), 'wait' (drain, bounded) or 'keep'. */
  mode?: PauseMode;
  drainTimeoutMs?: number;
}

interface InFlight {
  step: SchedulerOutput;
  result: Promise<ExecutorOutput>;
}

/**
 * The engine core: one Scheduler and one Executor in a `schedule → execute → update` loop. Step
 * N+1 is scheduled and handed to the executor while step N executes (up to maxStepsInFlight);
 * outputs become text in the OutputProcessor and leave through onOutputs. Sleep and wake follow
 * DESIGN.md rule 5: stop admitting → pause (drain with a bound, or abort, or keep) → no step in
 * flight → synchronize → allocator sleep; wake → reset the prefix cache and preempt kept requests
 * if KV was discarded → resume (not before weights are valid again after a level-2 sleep).
 */
export class EngineCore {
  readonly scheduler: Scheduler;
  readonly #executor: Executor;
  readonly #outputs: OutputProcessor;
  readonly #o: EngineCoreOptions;
  readonly #seeds: SeedSource;
  readonly #inflight: InFlight[] = [];
  readonly #arrivals = new Map<string, number>();
  readonly #quiesced: ConditionWaiters;
  readonly #maxInFlight: number;
  #admin: Promise<unknown> = Promise.resolve();
  #kick: (() => void) | null = null;
  #kicked = false;
  #stopped = false;
  #loop: Promise<void> | null = null;
  #pausedByUser: PauseMode | null = null;
  #error: Error | null = null;
  #numSteps = 0;

  constructor(o: EngineCoreOptions) {
    this.#o = o;
    this.#executor = o.executor;
    this.#outputs = new OutputProcessor(o.decoder);
    this.#seeds = new SeedSource(o.seed);
    this.#maxInFlight = o.maxStepsInFlight ?? 2;
    this.scheduler = new Scheduler({
      numBlocks: o.executor.numKvBlocks,
      blockSize: o.executor.blockSize,
      maxModelLen: o.maxModelLen,
      ...(o.maxNumSeqs === undefined ? {} : { maxNumSeqs: o.maxNumSeqs }),
      ...(o.maxNumBatchedTokens === undefined
        ? {}
        : { maxNumBatchedTokens: o.maxNumBatchedTokens }),
      enablePrefixCaching: o.enablePrefixCaching ?? true,
      policy: o.policy ?? 'fcfs',
      eosTokenIds: o.eosTokenIds,
      detokenize: (ids) => o.decoder.decode(ids, true),
      asyncScheduling: o.asyncScheduling ?? true,
    });
    this.#quiesced = new ConditionWaiters(
      () => this.scheduler.isPaused && this.#inflight.length === 0,
    );
  }

  /** Starts the loop (idempotent). */
  start(): void {
    this.#loop ??= this.#run();
  }

  /** Queues a request; throws a typed error (and queues nothing) when it cannot be served. */
  add(request: EngineRequest): void {
    this.#checkServing();
    const v = validateEngineRequest(request, this.#o.vocabSize);
    const sampler = resolveSamplerParams(v.sampling, this.#o.vocabSize, this.#seeds.next());
    const members = this.scheduler.addRequest({
      requestId: v.requestId,
      promptTokenIds: v.promptTokenIds,
      sampling: schedulerSampling(v.sampling),
      ...(v.priority === undefined ? {} : { priority: v.priority }),
      ...(v.cacheSalt === undefined ? {} : { cacheSalt: v.cacheSalt }),
      ...(v.arrivalTime === undefined ? {} : { arrivalTime: v.arrivalTime }),
      ...(sampler.promptLogprobs === null ? {} : { skipPrefixCache: true }),
      data: sampler,
    });
    const text = {
      stop: v.sampling.stop ?? [],
      skipSpecialTokens: v.sampling.skipSpecialTokens ?? true,
      includeStopStrInOutput: v.sampling.includeStopStrInOutput ?? false,
    };
    for (const m of members) {
      this.#outputs.add(
        m.requestId,
        v.promptTokenIds,
        text,
        sampler.promptLogprobs !== null && m.index === 0,
      );
      this.#arrivals.set(m.requestId, m.arrivalTime);
    }
    this.#signal();
  }

  /** Aborts a request (all its completions) wherever it is; unknown ids are ignored. */
  abort(requestId: string, reason: AbortReason = 'client'): void {
    this.#emit(this.scheduler.abort(requestId), reason);
    this.#signal();
  }

  /** POST /pause: stops scheduling per `mode` and resolves once paused (wake keeps it paused). */
  pause(mode: PauseMode, drainTimeoutMs?: number): Promise<void> {
    return this.#serial(async () => {
      this.#checkAlive();
      this.#pausedByUser = mode;
      await this.#pause(mode, drainTimeoutMs ?? this.#drainMs(), 'pause');
    });
  }

  /** POST /resume. Throws EngineUnavailableError while asleep or while weights are invalid. */
  resume(): Promise<void> {
    return this.#serial(async () => {
      this.#checkAlive();
      if (this.scheduler.state === 'sleeping') throw new EngineUnavailableError('sleeping');
      if (!this.scheduler.weightsValid) throw new EngineUnavailableError('weights-invalid');
      this.#pausedByUser = null;
      this.scheduler.resume();
      this.#signal();
    });
  }

  /** Pauses per `mode`, quiesces, then releases device memory (level 1 or 2, or only `tags`). */
  sleep(o: EngineSleepOptions = {}): Promise<void> {
    return this.#serial(async () => {
      this.#checkAlive();
      const level = o.level ?? 1;
      if (level !== 1 && level !== 2) throw new InvalidArgumentError('level', '1 or 2', level);
      const touchesWeights = o.tags === undefined || o.tags.includes('weights');
      const schedulerLevel = level === 2 && touchesWeights ? 2 : 1;
      const request = { level, ...(o.tags === undefined ? {} : { tags: o.tags }) } as const;
      if (this.scheduler.state === 'sleeping') {
        // Already asleep: sleep what a partial wake left awake; a deeper level needs a wake first.
        this.scheduler.sleep(schedulerLevel);
        await this.#executor.sleep(request);
        return;
      }
      await this.#pause(o.mode ?? 'abort', o.drainTimeoutMs ?? this.#drainMs(), 'sleep');
      await this.#executor.synchronize(this.#syncMs());
      const weightsWereValid = this.scheduler.weightsValid;
      this.scheduler.sleep(schedulerLevel);
      try {
        await this.#executor.sleep(request);
      } catch (err) {
        // The allocator left every tag awake: roll the state back and serve again.
        this.scheduler.wakeUp({ kvDiscarded: false });
        if (weightsWereValid) this.scheduler.markWeightsLoaded();
        this.#resumeIfAllowed();
        throw err;
      }
    });
  }

  /** Maps memory again (all tags, or `tags`); once fully awake, resumes unless user-paused. */
  wake(tags?: string[]): Promise<void> {
    return this.#serial(async () => {
      this.#checkAlive();
      if (this.scheduler.state !== 'sleeping' && this.#executor.asleepTags().length === 0) return;
      const r = await this.#executor.wake(tags);
      if (r.asleepTags.length > 0) return;
      // Discarded KV: preempt kept requests (they recompute) and forget every cached prefix.
      this.scheduler.wakeUp({ kvDiscarded: r.kvDiscarded });
      this.#resumeIfAllowed();
    });
  }

  /**
   * Writes the checkpoint in `dir` (default: the served model) into the weight memory in place.
   * Pauses ('keep') around the write; cached KV computed with the old weights is dropped.
   */
  reloadWeights(dir: string = this.#o.modelDir): Promise<void> {
    return this.#serial(async () => {
      this.#checkAlive();
      if (this.#executor.asleepTags().includes('weights')) {
        throw new EngineUnavailableError('sleeping');
      }
      if (this.scheduler.state === 'running' || this.scheduler.state === 'pausing') {
        await this.#pause('keep', this.#syncMs(), 'pause');
      }
      await this.#executor.synchronize(this.#syncMs());
      this.scheduler.markWeightsInvalid();
      await this.#executor.reloadWeights(dir);
      this.scheduler.invalidateKv();
      this.scheduler.markWeightsLoaded();
      if (this.scheduler.state === 'paused') this.#resumeIfAllowed();
    });
  }

  /** Device memory per tag and the budget the KV cache was sized from. */
  memory(): ExecutorMemory {
    return this.#executor.memory();
  }

  /** Forgets every cached prefix; returns how many blocks were uncached. */
  resetPrefixCache(): number {
    return this.scheduler.resetPrefixCache();
  }

  status(): EngineStatus {
    return {
      state: this.scheduler.state,
      sleepLevel: this.scheduler.sleepLevel,
      asleepTags: this.#executor.asleepTags(),
      weightsValid: this.scheduler.weightsValid,
      pausedByUser: this.#pausedByUser,
      dead: this.#error !== null,
      error: this.#error?.message ?? null,
    };
  }

  stats(): EngineStats {
    const s = this.scheduler.stats();
    return {
      ...s,
      prefixCacheRejectedHits: this.scheduler.pool.stats().prefixCacheRejectedHits,
      numSteps: this.#numSteps,
    };
  }

  /** Aborts everything (reason 'shutdown'), stops the loop and frees the executor. */
  async shutdown(): Promise<void> {
    if (this.#stopped) return;
    for (const id of this.#unfinishedIds()) this.abort(id, 'shutdown');
    this.#stopped = true;
    this.#signal();
    await this.#loop?.catch(() => undefined);
    await Promise.allSettled(this.#inflight.map((f) => f.result));
    this.#quiesced.fail(new EngineDeadError('the engine shut down'));
    await this.#executor.dispose();
  }

  // ---- the loop ----

  async #run(): Promise<void> {
    while (!this.#stopped) {
      let progressed: boolean;
      try {
        progressed = await this.#iterate();
      } catch (err) {
        this.#die(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      this.#quiesced.check();
      if (!progressed && !this.#stopped) await this.#waitForWork();
    }
  }

  /** Fills the pipeline, then completes the oldest step. False when there was nothing to do. */
  async #iterate(): Promise<boolean> {
    while (this.#inflight.length < this.#maxInFlight) {
      const step = this.scheduler.schedule();
      if (step.totalNumScheduledTokens === 0 && step.finishedRequestIds.length === 0) break;
      this.#markScheduled(step);
      const result = this.#executor.execute(step);
      result.catch(() => undefined); // awaited below; this only marks it handled
      this.#inflight.push({ step, result });
      if (step.totalNumScheduledTokens === 0) break;
      this.#numSteps++;
    }
    const next = this.#inflight.shift();
    if (next === undefined) return false;
    const output = await next.result;
    for (const chunk of output.promptLogprobs ?? []) this.#outputs.addPromptLogprobs(chunk);
    // Zero-token steps only carried finished ids to the workers: nothing to update.
    if (next.step.totalNumScheduledTokens > 0) this.#emit(this.scheduler.update(output), 'client');
    return true;
  }

  #markScheduled(step: SchedulerOutput): void {
    const now = Date.now();
    for (const n of step.newRequests) {
      const arrival = this.#arrivals.get(n.requestId);
      if (arrival === undefined) continue;
      this.#arrivals.delete(n.requestId);
      this.#outputs.markScheduled(n.requestId, Math.max(0, now - arrival));
    }
  }

  #emit(outs: RequestOutput[], reason: AbortReason): void {
    if (outs.length === 0) return;
    const list = outs.map((o) => {
      if (o.finishReason !== null) this.#arrivals.delete(o.requestId);
      return this.#outputs.process(o, reason);
    });
    this.#o.onOutputs(list);
  }

  #signal(): void {
    this.#kicked = true;
    const k = this.#kick;
    this.#kick = null;
    k?.();
  }

  #waitForWork(): Promise<void> {
    if (this.#kicked) {
      this.#kicked = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      this.#kick = () => {
        this.#kicked = false;
        resolve();
      };
    });
  }

  #die(err: Error): void {
    this.#error = err;
    this.#stopped = true;
    for (const id of this.#unfinishedIds()) {
      try {
        this.#emit(this.scheduler.abort(id), 'error');
      } catch {
        // The scheduler is past saving; the frontend fails these requests on onFatal.
      }
    }
    this.#quiesced.fail(new EngineDeadError(err.message));
    this.#o.onFatal?.(err);
  }

  // ---- pause helpers ----

  async #pause(mode: PauseMode, drainTimeoutMs: number, reason: AbortReason): Promise<void> {
    this.#emit(this.scheduler.pause(mode), reason);
    this.#signal();
    try {
      await this.#quiesced.wait(drainTimeoutMs, `pause('${mode}')`);
    } catch (err) {
      if (!(err instanceof TimeoutError) || mode === 'abort') throw err;
      // The drain bound passed: abort what is left (steps in flight still complete).
      this.#emit(this.scheduler.pause('abort'), reason);
      this.#signal();
      await this.#quiesced.wait(this.#syncMs(), "pause('abort') after the drain timeout");
    }
  }

  #resumeIfAllowed(): void {
    if (this.#pausedByUser !== null || !this.scheduler.weightsValid || this.#error !== null) return;
    if (this.scheduler.state === 'paused' || this.scheduler.state === 'pausing') {
      this.scheduler.resume();
      this.#signal();
    }
  }

  #checkAlive(): void {
    if (this.#error !== null) throw new EngineDeadError(this.#error.message);
    if (this.#stopped) throw new EngineDeadError('the engine shut down');
  }

  #checkServing(): void {
    this.#checkAlive();
    const s = this.scheduler.state;
    if (s === 'sleeping') throw new EngineUnavailableError('sleeping');
    if (!this.scheduler.weightsValid) throw new EngineUnavailableError('weights-invalid');
    if (s === 'pausing' || s === 'paused') throw new EngineUnavailableError(s);
  }

  #unfinishedIds(): string[] {
    return this.scheduler.unfinishedRequestIds();
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#admin.then(fn);
    this.#admin = run.catch(() => undefined);
    return run;
  }

  #drainMs(): number {
    return this.#o.drainTimeoutMs ?? 30_000;
  }

  #syncMs(): number {
    return this.#o.syncTimeoutMs ?? 60_000;
  }
}
