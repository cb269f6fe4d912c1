import type { Allocator } from '@x/cumem';
import type { SchedulerOutput } from '@x/scheduler';
import type { ModelConfig } from '../config.js';
import type { WeightStore } from '../weights.js';
import type {
  Executor,
  ExecutorMemory,
  ExecutorOutput,
  SleepRequest,
  WakeResult,
} from './executor.js';
import { Worker } from './worker.js';

/** Options of {@link InProcessExecutor.create}. */
export interface InProcessExecutorOptions {
  config: ModelConfig;
  weights: WeightStore;
  allocator: Allocator;
  numKvBlocks: number;
  blockSize: number;
  maxModelLen: number;
  /** The memory budget the KV cache was sized from (reported by memory()). */
  budgetBytes: number;
  stepTimeoutMs?: number;
  /** Pipelined steps with device-side token feedback (WorkerOptions.pipeline). Default true. */
  pipeline?: boolean;
}

/**
 * TP = PP = 1: one Worker in the engine-core thread. The scheduler's diff is applied by the worker
 * exactly as a worker process would apply it, so a multi-process executor replaces this class
 * without touching the engine core.
 */
export class InProcessExecutor implements Executor {
  readonly numKvBlocks: number;
  readonly blockSize: number;
  readonly worker: Worker;
  readonly #allocator: Allocator;
  readonly #budgetBytes: number;
  #kvDiscarded = false;
  #weightsDiscarded = false;

  private constructor(o: InProcessExecutorOptions, worker: Worker) {
    this.numKvBlocks = o.numKvBlocks;
    this.blockSize = o.blockSize;
    this.worker = worker;
    this.#allocator = o.allocator;
    this.#budgetBytes = o.budgetBytes;
  }

  static async create(o: InProcessExecutorOptions): Promise<InProcessExecutor> {
    const worker = await Worker.create(o);
    return new InProcessExecutor(o, worker);
  }

  execute(step: SchedulerOutput): Promise<ExecutorOutput> {
    return this.worker.execute(step);
  }

  synchronize(timeoutMs: number): Promise<void> {
    return this.worker.synchronize(timeoutMs);
  }

  async sleep(request: SleepRequest): Promise<void> {
    const tags = request.tags ?? this.#sleepableTags();
    // The allocator drains every registered stream (runner and sampler) before unmapping.
    await this.#allocator.sleep({ level: request.level, tags });
    if (tags.includes('kv_cache')) this.#kvDiscarded = true;
    if (tags.includes('weights') && request.level === 2) this.#weightsDiscarded = true;
  }

  async wake(tags?: string[]): Promise<WakeResult> {
    await this.#allocator.wake(tags === undefined ? {} : { tags });
    const asleepTags = this.asleepTags();
    const result = {
      asleepTags,
      kvDiscarded: this.#kvDiscarded,
      weightsDiscarded: this.#weightsDiscarded,
    };
    if (asleepTags.length === 0) {
      this.#kvDiscarded = false;
      this.#weightsDiscarded = false;
    }
    return result;
  }

  asleepTags(): string[] {
    return Object.entries(this.#allocator.tags())
      .filter(([, t]) => t.asleep)
      .map(([name]) => name)
      .sort();
  }

  reloadWeights(dir: string): Promise<void> {
    return this.worker.reloadWeights(dir, 300_000);
  }

  memory(): ExecutorMemory {
    const stats = this.#allocator.stats();
    const tags: ExecutorMemory['tags'] = {};
    for (const [name, s] of Object.entries(stats)) {
      tags[name] = { allocated: s.allocated, mapped: s.mapped };
    }
    return {
      device: this.#allocator.device.name,
      budgetBytes: this.#budgetBytes,
      weightsBytes: stats.weights?.allocated ?? 0,
      kvCacheBytes: stats.kv_cache?.allocated ?? 0,
      tags,
    };
  }

  async dispose(): Promise<void> {
    await this.worker.dispose();
  }

  #sleepableTags(): string[] {
    return Object.entries(this.#allocator.tags())
      .filter(([, t]) => t.onSleep !== 'keep')
      .map(([name]) => name);
  }
}
