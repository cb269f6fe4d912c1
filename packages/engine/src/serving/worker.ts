import { Stream } from '@x/core';
import type { Allocator } from '@x/cumem';
import type { SchedulerOutput } from '@x/scheduler';
import type { ModelConfig } from '../config.js';
import { ModelRunner } from '../model-runner.js';
import type { WeightStore } from '../weights.js';
import type { ExecutorOutput } from './executor.js';
import { promptLogprobs, wantsPromptLogprobs } from './prompt-logprobs.js';
import { RequestStates, sequenceStep } from './request-states.js';
import { Sampler } from './sampler.js';
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
}

/**
 * One rank's worker: a ModelRunner on its own stream, a Sampler on another, and the per-request
 * state the scheduler's diffs update. `execute` prepares step N+1 (applies the diff, builds the
 * batch) at call time, while step N may still run; the runner and the sampler each keep call
 * order, so steps resolve in order.
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
  #chain: Promise<unknown> = Promise.resolve();

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
   * Applies the step's diff now; runs the step after the steps before it, building its input
   * then (a decode scheduled one step ahead reads the token the previous step sampled).
   */
  execute(step: SchedulerOutput): Promise<ExecutorOutput> {
    const rows = this.states.apply(step);
    const done = this.#chain.then(async () => {
      if (step.totalNumScheduledTokens === 0 || rows.length === 0) {
        return { stepId: step.stepId, sampled: [] };
      }
      const wantPrompt = rows.some(wantsPromptLogprobs);
      // On CUDA the runner samples on the GPU (only sampled ids come back); on the CPU the Sampler
      // samples the returned logits on its own stream.
      const onDevice = this.sampler.deviceRequest(rows, this.runner.stream.device);
      const out = await this.runner.execute(rows.map(sequenceStep), {
        timeoutMs: this.#timeoutMs,
        ...(wantPrompt ? { allLogits: true } : {}),
        ...onDevice,
      });
      const { logits, allLogits } = out;
      const sampled = out.sampled
        ? this.sampler.fromDevice(rows, out.sampled)
        : await this.sampler.sample(rows, logits, this.#timeoutMs);
      const byId = new Map(rows.map((r) => [r.state.requestId, r.state]));
      for (const s of sampled) this.states.recordSampled(byId.get(s.requestId)!, s.tokenIds[0]!);
      if (!wantPrompt) return { stepId: step.stepId, sampled };
      const vocab = this.runner.config.vocabSize;
      return {
        stepId: step.stepId,
        sampled,
        promptLogprobs: promptLogprobs(rows, allLogits!, vocab),
      };
    });
    // Keep the chain alive after a failure; the caller sees the rejection of `done`.
    this.#chain = done.catch(() => undefined);
    return done;
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
