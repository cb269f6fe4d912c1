import type { FinishReason, PauseMode, SchedulerState } from '@x/scheduler';
import type { EngineSamplingParams } from './sampling-params.js';

/** A generation request as the frontend submits it: token ids in, text and tokens out. */
export interface EngineRequest {
  /** Unique among unfinished requests. n > 1 completions are reported under this id by index. */
  requestId: string;
  promptTokenIds: number[];
  sampling: EngineSamplingParams;
  /** Lower runs first under the priority policy. Default 0. */
  priority?: number;
  /** Requests with different salts never share cached KV blocks. */
  cacheSalt?: string;
  /** Unix ms the frontend received the request (queue time is measured from it). */
  arrivalTime?: number;
}

/** Why an aborted completion ended. */
export type AbortReason = 'client' | 'pause' | 'sleep' | 'shutdown' | 'error';

/** One output token's log-probabilities, with token text for the OpenAI formats. */
export interface OutputLogprob {
  tokenId: number;
  /** The token's text (special tokens included). */
  token: string;
  logprob: number;
  /** 1 = most likely under the raw logits. */
  rank: number;
  /** The `logprobs` most likely tokens, best first (empty when 0 were asked for). */
  top: Array<{ tokenId: number; token: string; logprob: number }>;
}

/** What one completion produced in one step (a delta), or how it ended. */
export interface CompletionOutput {
  /** The EngineRequest's id (the parent id when n > 1). */
  requestId: string;
  /** Completion index in [0, n). */
  index: number;
  /** Tokens added this step (eos and stop tokens included, as usage counts them). */
  tokenIds: number[];
  /** Text added this step; stop strings are never emitted and text may be held back for them. */
  text: string;
  /** One entry per token in tokenIds when logprobs were asked for, else null. */
  logprobs: OutputLogprob[] | null;
  finishReason: FinishReason | null;
  /** The stop string or stop token id that ended it, else null. */
  stopReason: number | string | null;
  /** Set when finishReason is 'abort'. */
  abortReason?: AbortReason;
  numPromptTokens: number;
  /** Prompt tokens served from the prefix cache (or shared with a sibling). */
  numCachedTokens: number;
  numOutputTokens: number;
  /** In the first output of a completion: ms from arrival to first being scheduled. */
  queueTimeMs?: number;
  /**
   * With promptLogprobs, in completion 0's first output: one entry per prompt token, the first
   * null (nothing precedes it).
   */
  promptLogprobs?: Array<OutputLogprob | null>;
}

/** The engine's serving state, as /health, /is_sleeping and admin calls see it. */
export interface EngineStatus {
  state: SchedulerState;
  /** Level of the current sleep, or null. */
  sleepLevel: 1 | 2 | null;
  /** @x/cumem tags asleep now (a partial wake leaves some). */
  asleepTags: string[];
  /** False after a level-2 sleep until weights are reloaded. */
  weightsValid: boolean;
  /** Paused by POST /pause (not by a sleep): wake does not resume it. */
  pausedByUser: PauseMode | null;
  /** The engine loop failed and serves nothing more; the error says why. */
  dead: boolean;
  error: string | null;
}

/** Gauges and counters for /metrics (counters are totals since start). */
export interface EngineStats {
  numRunning: number;
  numWaiting: number;
  kvCacheUsage: number;
  numFreeBlocks: number;
  numPreemptions: number;
  prefixCacheQueries: number;
  prefixCacheHits: number;
  /** Prefix hits whose stored tokens did not match (verified and refused; expected 0). */
  prefixCacheRejectedHits: number;
  numSteps: number;
}

/** What `x serve` prints at startup and /v1/models reports. */
export interface EngineInfo {
  modelDir: string;
  device: string;
  dtype: string;
  architecture: string;
  maxModelLen: number;
  blockSize: number;
  numKvBlocks: number;
  budgetBytes: number;
  weightsBytes: number;
  kvCacheBytes: number;
  vocabSize: number;
  eosTokenIds: number[];
}
