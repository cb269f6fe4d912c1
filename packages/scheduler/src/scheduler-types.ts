import type { FinishReason, TokenLogprobs } from './request.js';
import type { SchedulingPolicy } from './request-queue.js';
import type { SamplingParams } from './sampling-params.js';
import type { Detokenize } from './stop-checker.js';

/** Options of a Scheduler. Sizes are in tokens unless named otherwise. */
export interface SchedulerOptions {
  /** KV blocks the workers allocated (same on every TP/PP rank). */
  numBlocks: number;
  /** Tokens per KV block. Default 16. */
  blockSize?: number;
  /** Longest sequence (prompt + output). numBlocks × blockSize must hold one such sequence. */
  maxModelLen: number;
  /** Most requests running at once. Default 256. */
  maxNumSeqs?: number;
  /** Token budget of one step (prefill chunks + decodes). Default 8192. */
  maxNumBatchedTokens?: number;
  /** Order of the waiting queue and of preemption victims. Default 'fcfs'. */
  policy?: SchedulingPolicy;
  /** Automatic prefix caching. Default true. */
  enablePrefixCaching?: boolean;
  /** The tokenizer's end-of-sequence ids, for requests that give none. Default []. */
  eosTokenIds?: readonly number[];
  /** Needed only for requests with stop strings (see README: stop strings). */
  detokenize?: Detokenize;
  /** Clock for arrival times, ms. Default Date.now. */
  now?: () => number;
  /**
   * Schedule a decode one step ahead, before the token it consumes is known (vLLM's async
   * scheduling): the worker feeds the token it sampled in the previous step. Overlaps scheduling
   * and output processing of step N with the forward pass of step N+1. Default false.
   */
  asyncScheduling?: boolean;
}

/** A request as the engine submits it. */
export interface RequestInput {
  /** Unique among unfinished requests. With n > 1 each completion gets `${index}_${requestId}`. */
  requestId: string;
  promptTokenIds: readonly number[];
  sampling?: SamplingParams;
  /** Lower runs first under the 'priority' policy. Integer, default 0. */
  priority?: number;
  /** ms; default now(). */
  arrivalTime?: number;
  /** Requests with different salts never share cached blocks (OpenAI `cache_salt`). */
  cacheSalt?: string;
  /**
   * Compute every prompt token (no prefix-cache hit at admission), e.g. because the prompt's
   * log-probabilities are wanted. Its blocks are still offered to the cache. Default false.
   */
  skipPrefixCache?: boolean;
  /** Overrides SchedulerOptions.eosTokenIds (e.g. a chat template's end-of-turn id). */
  eosTokenIds?: readonly number[];
  /** Opaque: handed to workers in NewRequestData (full sampling params, seed, …). */
  data?: unknown;
}

/** A request workers see for the first time (or again after a preemption): sent in full. */
export interface NewRequestData {
  requestId: string;
  parentRequestId: string;
  index: number;
  promptTokenIds: number[];
  /** Tokens generated before a preemption; their KV is recomputed like the prompt's. */
  outputTokenIds: number[];
  /** The request's whole block table. */
  blockIds: number[];
  /** Leading tokens whose KV is already valid (prefix-cache hits, forks) — not recomputed. */
  numComputedTokens: number;
  /** Tokens to compute this step, starting at numComputedTokens. */
  numScheduledTokens: number;
  /** True when this step reaches the last known token: sample one token. */
  sample: boolean;
  /** min_tokens hint: while true the sampler must mask eosTokenIds and stopTokenIds. */
  maskStopTokens: boolean;
  eosTokenIds: readonly number[];
  stopTokenIds: readonly number[];
  /** Top log-probabilities to return per sampled token, or null. */
  logprobs: number | null;
  data: unknown;
}

/** A request workers already hold: only what changed since they last saw it. */
export interface CachedRequestData {
  requestId: string;
  /**
   * Tokens appended since the previous step that included this request: the tokens the workers
   * sampled, confirmed by update(). Positions past the known tokens (async scheduling) are the
   * tokens the worker sampled in the steps before and that are not confirmed yet.
   */
  newTokenIds: number[];
  /** Blocks appended to the block table. */
  newBlockIds: number[];
  numComputedTokens: number;
  numScheduledTokens: number;
  sample: boolean;
  maskStopTokens: boolean;
}

/**
 * One step for the workers, as a diff. Apply in this order: drop `finishedRequestIds`, add
 * `newRequests`, update `cachedRequests`. A step with totalNumScheduledTokens 0 needs no forward
 * pass and must not be passed to update(); its `finishedRequestIds` must still reach the workers.
 */
export interface SchedulerOutput {
  stepId: number;
  newRequests: NewRequestData[];
  cachedRequests: CachedRequestData[];
  totalNumScheduledTokens: number;
  /** Requests finished, aborted or preempted since the previous output: free their state. */
  finishedRequestIds: string[];
}

/** One sampling request's result in a step. */
export interface SampledTokens {
  requestId: string;
  /** Exactly one token per step today (speculative decoding would return more). */
  tokenIds: number[];
  logprobs?: TokenLogprobs[];
}

/** What the executor returns for a step: a token for every request scheduled with sample=true. */
export interface ModelOutput {
  stepId: number;
  sampled: SampledTokens[];
}

/** Progress of one request after update(), abort() or pause('abort'). */
export interface RequestOutput {
  requestId: string;
  parentRequestId: string;
  index: number;
  /** Tokens appended this step (a stop token or eos is included; see README). */
  newTokenIds: number[];
  newLogprobs: TokenLogprobs[] | null;
  finishReason: FinishReason | null;
  /** The stop token id or stop string that ended the request, else null. */
  stopReason: number | string | null;
  /** For a stop string: characters to cut from the end of the decoded output text. */
  stopTrimChars: number;
  numPromptTokens: number;
  numOutputTokens: number;
  /** Prompt tokens served from the prefix cache or a sibling fork. */
  numCachedTokens: number;
}

/** Gauges and counters for /metrics. */
export interface SchedulerStats {
  numRunning: number;
  numWaiting: number;
  numPreemptions: number;
  kvCacheUsage: number;
  numFreeBlocks: number;
  prefixCacheQueries: number;
  prefixCacheHits: number;
}
