import { Stream } from '@x/core';
import type { Allocator } from '@x/cumem';
import type { SampledTokens, SchedulerOutput } from '@x/scheduler';
import type { ModelConfig } from '../config.js';
import { ModelRunner } from '../model-runner.js';
import type { WeightStore } from '../weights.js';
import type { ExecutorOutput } from './executor.js';
import { promptLogprobs, wantsPromptLogprobs } from './prompt-logprobs.js';
import { RequestStates, type ScheduledRow, sequenceStep } from './request-states.js';
import { Sampler } from './sampler.js';
import { hostWaits, pipelinedStep, type SubmittedStep, submitted } from './token-feedback.js';
import { reloadWeightsInPlace } from './weight-reload.js';

/** Options of {@link Worker.create}. */
export interface WorkerOptions {
  config: ModelConfig;
  weights: WeightStore;
  allocator: Allocator;
  numKvBlocks: number;
  blockSize: number;
  maxModelLen: number;
  /** Bound on each wait for a stream (ms). Default 300 000. */
  stepTimeoutMs?: number;
  /**
   * Hand each step to the runner as soon as the previous one is enqueued, sampling on the
   * runner's stream and feeding sampled ids back on the device, instead of waiting for the
   * previous step's ids on the host (both devices). Default true.
   */
  pipeline?: boolean;
}

/**
 * One rank's worker: a ModelRunner on its own stream, a Sampler on another, and the per-request
 * state the scheduler's diffs update. `execute` applies the diff at call time and resolves steps
 * in call order.
 *
 * Pipelined (the default): step N+1 goes to the runner as soon as step N is enqueued. Every step
 * samples on the runner's stream; a token step N is still sampling is a placeholder in its
 * request's state, and step N+1 takes it from the device (SequenceStep.feedback), so the device
 * never waits for the host between steps. Where a token is needed on the host first (penalties,
 * or a token from an older step) the step waits for it. Synchronous (`pipeline: false`): step N+1
 * is built once step N resolved; on the CPU the Sampler samples the returned logits on its own
 * stream. Both give the same tokens.
 */
export class Worker {
  readonly runner: ModelRunner;
  readonly sampler: Sampler;
  readonly states = new RequestStates();
  readonly weights: WeightStore;
  readonly #allocator: Allocator;
  readonly #runnerStream: Stream;
  readonly #samplerStream: Stream;
  readonly #timeoutMs: number;
  readonly #pipeline: boolean;
  /** Resolves when the last step resolved (never rejects). */
  #chain: Promise<unknown> = Promise.resolve();
  /** Resolves when the last step was handed to the runner (pipelined; never rejects). */
  #submits: Promise<unknown> = Promise.resolve();
  /** The step handed to the runner last: the one tokens are fed back from. */
  #last: SubmittedStep | undefined;

  private constructor(
    o: WorkerOptions,
    runner: ModelRunner,
    runnerStream: Stream,
    samplerStream: Stream,
  ) {
    this.runner = runner;
    this.weights = o.weights;
    this.#allocator = o.allocator;
    this.#runnerStream = runnerStream;
    this.#samplerStream = samplerStream;
    this.sampler = new Sampler(samplerStream, o.config.vocabSize);
    this.#timeoutMs = o.stepTimeoutMs ?? 300_000;
    this.#pipeline = o.pipeline ?? true;
  }

  /** True when steps are pipelined (see the class notes). */
  get pipelined(): boolean {
    return this.#pipeline;
  }

  static async create(o: WorkerOptions): Promise<Worker> {
    const device = o.allocator.device;
    const runnerStream = Stream.create(device);
    const samplerStream = Stream.create(device);
    try {
      const runner = await ModelRunner.create({
        config: o.config,
        weights: o.weights,
        allocator: o.allocator,
        stream: runnerStream,
        numKvBlocks: o.numKvBlocks,
        blockSize: o.blockSize,
        maxModelLen: o.maxModelLen,
      });
      o.allocator.registerStream(samplerStream);
      return new Worker(o, runner, runnerStream, samplerStream);
    } catch (err) {
      runnerStream.dispose();
      samplerStream.dispose();
      throw err;
    }
  }

  /**
   * Applies the step's diff now; runs the step after the steps before it (pipelined: as soon as
   * they are enqueued), building its input then from the tokens the steps before sampled.
   */
  execute(step: SchedulerOutput): Promise<ExecutorOutput> {
    const rows = this.states.apply(step);
    const before = this.#chain;
    let done: Promise<ExecutorOutput>;
    if (step.totalNumScheduledTokens === 0 || rows.length === 0) {
      done = before.then(() => ({ stepId: step.stepId, sampled: [] }));
    } else if (!this.#pipeline) {
      done = before.then(() => this.#runSync(step, rows));
    } else {
      const handed = this.#submits.then(() => this.#submit(rows));
      this.#submits = handed.catch(() => undefined);
      done = Promise.all([handed, before]).then(([sub]) => this.#finish(step, rows, sub));
    }
    // Keep the chain alive after a failure; the caller sees the rejection of `done`.
    this.#chain = done.catch(() => undefined);
    return done;
  }

  /** Pipelined: builds the step (waiting only for tokens it cannot take from the device) and enqueues it. */
  async #submit(rows: ScheduledRow[]): Promise<SubmittedStep> {
    const waits = hostWaits(rows, this.#last);
    if (waits.length > 0) await Promise.all(waits);
    const last = this.#last;
    const batch = rows.map((r) => pipelinedStep(r, last));
    const wantPrompt = rows.some(wantsPromptLogprobs);
    const { sample } = this.sampler.deviceRequest(rows);
    const result = this.runner.execute(batch, {
      timeoutMs: this.#timeoutMs,
      ...(wantPrompt ? { allLogits: true } : {}),
      ...(sample ? { sample } : { logits: false }),
    });
    const sub = submitted(rows, result);
    this.#last = sub;
    return sub;
  }

  async #finish(
    step: SchedulerOutput,
    rows: ScheduledRow[],
    sub: SubmittedStep,
  ): Promise<ExecutorOutput> {
    const out = await sub.result;
    await sub.filled;
    const sampled = out.sampled ? this.sampler.fromDevice(rows, out.sampled) : [];
    return this.#output(step, rows, sampled, out.allLogits);
  }

  async #runSync(step: SchedulerOutput, rows: ScheduledRow[]): Promise<ExecutorOutput> {
    const wantPrompt = rows.some(wantsPromptLogprobs);
    // On CUDA the runner samples on the GPU (only sampled ids come back); on the CPU the Sampler
    // samples the returned logits on its own stream.
    const cuda = this.runner.stream.device.kind === 'cuda';
    const onDevice = cuda ? this.sampler.deviceRequest(rows) : {};
    const out = await this.runner.execute(rows.map(sequenceStep), {
      timeoutMs: this.#timeoutMs,
      ...(wantPrompt ? { allLogits: true } : {}),
      ...onDevice,
    });
    const sampled = out.sampled
      ? this.sampler.fromDevice(rows, out.sampled)
      : await this.sampler.sample(rows, out.logits, this.#timeoutMs);
    const byId = new Map(rows.map((r) => [r.state.requestId, r.state]));
    for (const s of sampled) this.states.recordSampled(byId.get(s.requestId)!, s.tokenIds[0]!);
    return this.#output(step, rows, sampled, out.allLogits);
  }

  #output(
    step: SchedulerOutput,
    rows: ScheduledRow[],
    sampled: SampledTokens[],
    allLogits: Float32Array | undefined,
  ): ExecutorOutput {
    if (!rows.some(wantsPromptLogprobs)) return { stepId: step.stepId, sampled };
    const vocab = this.runner.config.vocabSize;
    return {
      stepId: step.stepId,
      sampled,
      promptLogprobs: promptLogprobs(rows, allLogits!, vocab),
    };
  }

  /** Waits for every queued step and for both streams. */
  async synchronize(timeoutMs: number): Promise<void> {
    await this.#chain;
    await this.#runnerStream.synchronize({ timeoutMs });
    await this.#samplerStream.synchronize({ timeoutMs });
  }

  /** Writes the checkpoint in `dir` into this worker's weight memory (addresses unchanged). */
  async reloadWeights(dir: string, timeoutMs: number): Promise<void> {
    await this.synchronize(timeoutMs);
    await reloadWeightsInPlace(
      dir,
      this.runner.config,
      this.weights,
      this.#runnerStream,
      timeoutMs,
    );
  }

  /** Frees the runner, streams and buffers (not the weights: their owner frees them). */
  async dispose(): Promise<void> {
    await this.#chain;
    await this.runner.dispose();
    await this.#samplerStream.synchronize({ timeoutMs: this.#timeoutMs }).catch(() => undefined);
    this.#allocator.unregisterStream(this.#samplerStream);
    this.sampler.dispose();
    this.#runnerStream.dispose();
    this.#samplerStream.dispose();
  }
}
