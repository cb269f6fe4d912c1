import type { BlockHash } from './block-hash.js';
import type { ResolvedSamplingParams } from './sampling-params.js';
import type { StopStringMatcher } from './stop-checker.js';

/** Where a request is in its life. `preempted` requests wait again and recompute their KV. */
export type RequestStatus = 'waiting' | 'running' | 'preempted' | 'finished';

/** Why a request finished: `stop` (eos, stop token or stop string), `length` or `abort`. */
export type FinishReason = 'stop' | 'length' | 'abort';

/** One output token's log-probabilities, passed through from the sampler untouched. */
export interface TokenLogprobs {
  /** Log-probability of the sampled token. */
  logprob: number;
  /** Rank of the sampled token in the distribution (1 = most likely). */
  rank?: number;
  /** Top-k token ids, most likely first (k = the request's `logprobs`). */
  topTokenIds?: number[];
  /** Log-probabilities of `topTokenIds`, same order. */
  topLogprobs?: number[];
}

/**
 * A sequence the scheduler tracks: one per completion, so a request with n = 3 becomes three.
 * Owned by the Scheduler; callers read it, never write it.
 */
export class Request {
  readonly requestId: string;
  /** The id the caller used in addRequest (differs from requestId only when n > 1). */
  readonly parentRequestId: string;
  /** Index of this completion among the parent's n (0-based). */
  readonly index: number;
  readonly sampling: ResolvedSamplingParams;
  readonly eosTokenIds: readonly number[];
  readonly priority: number;
  readonly arrivalTime: number;
  /** Admission order: breaks ties between equal priority and arrival time. */
  readonly seq: number;
  /** Hash extras (cache_salt) — requests with different extras never share blocks. */
  readonly hashExtras: string;
  /** Never take prefix-cache hits (every prompt token is computed). */
  readonly skipPrefixCache: boolean;
  /** Opaque to the scheduler: handed to workers with the request (full sampling params, seed…). */
  readonly data: unknown;
  readonly numPromptTokens: number;
  /** Prompt then output tokens. Only the scheduler appends. */
  readonly tokenIds: number[];

  status: RequestStatus = 'waiting';
  /** Tokens whose KV is computed or scheduled to be computed by steps already handed out. */
  numComputedTokens = 0;
  /** Prompt tokens served from the prefix cache at first admission (for usage and metrics). */
  numCachedTokens = -1;
  /** KV blocks in order; mutated only by KVCacheManager. */
  readonly blockIds: number[] = [];
  /** Hashes of this request's full blocks, computed incrementally (index = block index). */
  readonly blockHashes: BlockHash[] = [];
  /** Leading blocks already offered to the prefix cache (KVCacheManager bookkeeping). */
  numBlocksRegistered = 0;
  /**
   * Steps handed out whose sampled token this request still waits for, oldest first. With async
   * scheduling a decode may run one step ahead: its input is the token the step before samples.
   */
  readonly inFlightSteps: number[] = [];
  /** How many of tokenIds / blockIds the workers already hold (drives the output diff). */
  numTokensSent = 0;
  numBlocksSent = 0;
  /** Whether workers hold this request's state (false again after preemption). */
  sentToWorkers = false;
  numPreemptions = 0;
  finishReason: FinishReason | null = null;
  /** The stop token id or stop string that ended the request, else null. */
  stopReason: number | string | null = null;
  /** Incremental stop-string matcher; only for requests with stop strings. */
  stopMatcher: StopStringMatcher | null = null;

  constructor(init: {
    requestId: string;
    parentRequestId: string;
    index: number;
    promptTokenIds: readonly number[];
    sampling: ResolvedSamplingParams;
    eosTokenIds: readonly number[];
    priority: number;
    arrivalTime: number;
    seq: number;
    hashExtras: string;
    skipPrefixCache?: boolean;
    data: unknown;
  }) {
    this.requestId = init.requestId;
    this.parentRequestId = init.parentRequestId;
    this.index = init.index;
    this.sampling = init.sampling;
    this.eosTokenIds = init.eosTokenIds;
    this.priority = init.priority;
    this.arrivalTime = init.arrivalTime;
    this.seq = init.seq;
    this.hashExtras = init.hashExtras;
    this.skipPrefixCache = init.skipPrefixCache ?? false;
    this.data = init.data;
    this.numPromptTokens = init.promptTokenIds.length;
    this.tokenIds = [...init.promptTokenIds];
  }

  get numTokens(): number {
    return this.tokenIds.length;
  }

  get numOutputTokens(): number {
    return this.tokenIds.length - this.numPromptTokens;
  }

  /** The prompt's token ids. */
  get promptTokenIds(): number[] {
    return this.tokenIds.slice(0, this.numPromptTokens);
  }

  /** The output's token ids so far. */
  get outputTokenIds(): number[] {
    return this.tokenIds.slice(this.numPromptTokens);
  }

  get isFinished(): boolean {
    return this.status === 'finished';
  }
}
