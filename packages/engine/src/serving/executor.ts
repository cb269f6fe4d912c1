import type { ModelOutput, SchedulerOutput } from '@x/scheduler';
import type { PromptLogprobsChunk } from './prompt-logprobs.js';

/** A step's result: the scheduler's ModelOutput plus what only the engine core reads. */
export interface ExecutorOutput extends ModelOutput {
  /** Prompt log-probabilities computed in this step (requests that asked for them). */
  promptLogprobs?: PromptLogprobsChunk[];
}

/** Which memory a sleep released and what it did to the contents. */
export interface SleepRequest {
  /** 1: weights offloaded to host, KV discarded (default). 2: both discarded (reload weights). */
  level: 1 | 2;
  /** Only these @x/cumem tags (default: every tag that is not `keep`). */
  tags?: string[];
}

/** What a wake found: which tags are still asleep and whether contents were lost meanwhile. */
export interface WakeResult {
  /** Tags still asleep after this call (a partial wake, `tags`), empty when fully awake. */
  asleepTags: string[];
  /** The KV cache was discarded since the last full wake: the prefix cache is stale. */
  kvDiscarded: boolean;
  /** The weights were discarded (level 2): serving must wait for a reload. */
  weightsDiscarded: boolean;
}

/** Memory of one rank, in bytes, per @x/cumem tag. */
export interface ExecutorMemory {
  device: string;
  /** The budget the KV cache was sized from (gpu-memory-utilization × device memory). */
  budgetBytes: number;
  weightsBytes: number;
  kvCacheBytes: number;
  /** Per tag: bytes allocated and bytes physically mapped now. */
  tags: Record<string, { allocated: number; mapped: number }>;
}

/**
 * The engine core's only view of the model: it hands over each scheduled step and gets sampled
 * tokens back. An executor owns the workers (one per TP × PP rank) and everything they hold:
 * weights, KV cache, streams, per-request state.
 *
 * Protocol (the scheduler output is a diff, DESIGN.md §4):
 * - `execute(step)` is called once per step, in stepId order, with exactly what
 *   `Scheduler.schedule()` returned. Every worker applies the diff to its own per-request state
 *   (drop `finishedRequestIds`, add `newRequests` in full, extend `cachedRequests` with new tokens
 *   and blocks), so a step carries only what changed. A step with `totalNumScheduledTokens === 0`
 *   only updates that state and resolves with no samples.
 * - `execute(step N+1)` may be called before step N resolved (the engine overlaps scheduling with
 *   execution). Steps run and resolve in call order; an implementation must not reorder them.
 * - The returned `ModelOutput` has one sampled token per request scheduled with `sample: true`.
 *   With tensor/pipeline parallelism it is the last pipeline stage's (TP rank 0) result.
 * - `synchronize`, `sleep`, `wake` and `reloadWeights` are only called with no step in flight.
 *   `sleep` quiesces every stream and agrees across ranks before any memory is unmapped; `wake`
 *   agrees across ranks on success (DESIGN.md rule 5).
 *
 * A multi-process executor (TP × PP workers over @x/comm) implements the same interface: the
 * scheduler and the engine core do not change.
 */
export interface Executor {
  /** KV cache blocks per rank (the scheduler's block pool has exactly these). */
  readonly numKvBlocks: number;
  /** Tokens per KV block. */
  readonly blockSize: number;
  /** Runs one step; see the protocol above. Rejects on a device or worker failure (fatal). */
  execute(step: SchedulerOutput): Promise<ExecutorOutput>;
  /** Resolves when every stream of every rank is idle; TimeoutError after `timeoutMs`. */
  synchronize(timeoutMs: number): Promise<void>;
  /** Releases device memory per tag policy (offload / discard), after quiescing. */
  sleep(request: SleepRequest): Promise<void>;
  /** Maps memory again (all tags, or `tags`), restoring offloaded contents. */
  wake(tags?: string[]): Promise<WakeResult>;
  /** Tags asleep now. */
  asleepTags(): string[];
  /**
   * Writes the checkpoint in `dir` (same architecture and shapes) into the existing weight
   * memory, in place: addresses do not move. Used after a level-2 sleep, or to swap weights.
   */
  reloadWeights(dir: string): Promise<void>;
  memory(): ExecutorMemory;
  /** Frees everything; safe in any state (awake or asleep). */
  dispose(): Promise<void>;
}
