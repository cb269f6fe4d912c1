/**
 * @x/scheduler — continuous batching over a paged KV block pool with automatic prefix caching,
 * chunked prefill, preemption by recompute, stop conditions, and the pause/sleep state machine
 * (including the two-phase pause across data-parallel ranks). Pure TypeScript.
 */
export { type BlockHash, hashBlock, ROOT_BLOCK_HASH } from './block-hash.js';
export { BlockPool, type BlockPoolOptions, type BlockPoolStats } from './block-pool.js';
export { InMemoryAllReduce } from './in-memory-all-reduce.js';
export { KVCacheManager } from './kv-cache-manager.js';
export {
  type AllReduceSum,
  PauseConsensus,
  type PauseConsensusOptions,
  type SyncResult,
} from './pause-consensus.js';
export {
  PAUSE_MODES,
  type PauseMode,
  PauseState,
  type SchedulerState,
  SchedulerStateError,
  type SleepLevel,
} from './pause-state.js';
export { type FinishReason, Request, type RequestStatus, type TokenLogprobs } from './request.js';
export type { RequestQueue, SchedulingPolicy } from './request-queue.js';
export {
  type ResolvedSamplingParams,
  resolveSamplingParams,
  type SamplingParams,
} from './sampling-params.js';
export { Scheduler } from './scheduler.js';
export type {
  CachedRequestData,
  ModelOutput,
  NewRequestData,
  RequestInput,
  RequestOutput,
  SampledTokens,
  SchedulerOptions,
  SchedulerOutput,
  SchedulerStats,
} from './scheduler-types.js';
export { type Detokenize, type StopStringMatch, StopStringMatcher } from './stop-checker.js';
