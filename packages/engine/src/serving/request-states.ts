import { InternalError, InvalidArgumentError } from '@x/core';
import type { SchedulerOutput } from '@x/scheduler';
import type { SequenceStep } from '../model-runner.js';
import type { SamplerParams } from './sampling-params.js';

/** What a worker remembers about one request between steps (DESIGN.md §4: workers keep state). */
export interface RequestState {
  readonly requestId: string;
  /** Completion index among the parent's n (seeded draws use seed + index). */
  readonly index: number;
  readonly promptTokenIds: readonly number[];
  /**
   * Output tokens this worker knows: the ones the scheduler confirmed, then the ones it sampled
   * itself that are not confirmed yet (async scheduling runs a step on those).
   */
  readonly outputTokenIds: number[];
  /** How many of outputTokenIds the scheduler has confirmed. */
  numConfirmed: number;
  readonly blockIds: number[];
  /** Tokens whose KV is computed after the current step's tokens are computed. */
  numComputedTokens: number;
  readonly sampler: SamplerParams;
  readonly eosTokenIds: readonly number[];
  readonly stopTokenIds: readonly number[];
  readonly logprobs: number | null;
  /**
   * Tokens of outputTokenIds sampled on the device whose ids have not reached the host yet (a
   * pipelined worker: they hold PENDING_TOKEN until their step's results are read).
   */
  readonly pending: PendingSample[];
}

/** outputTokenIds' placeholder for a token still being sampled. */
export const PENDING_TOKEN = -1;

/** A token sampled by a step the worker submitted, at outputTokenIds[index], row `row` of it. */
export interface PendingSample {
  readonly index: number;
  readonly row: number;
  /** The step (its identity marks the runner's previous step; `filled` its ids on the host). */
  readonly step: { readonly filled: Promise<void> };
}

/** One request's part of a step, in batch order: tokens [start, start + count) of the sequence. */
export interface ScheduledRow {
  state: RequestState;
  start: number;
  count: number;
  sample: boolean;
  maskStopTokens: boolean;
}

/**
 * The runner's input for a row, built when the step runs (not when it is scheduled): a position
 * past the confirmed tokens holds the token this worker sampled in an earlier step.
 */
export function sequenceStep(row: ScheduledRow): SequenceStep {
  const { state, start, count } = row;
  const prompt = state.promptTokenIds;
  const tokens: number[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const p = start + i;
    const t = p < prompt.length ? prompt[p] : state.outputTokenIds[p - prompt.length];
    if (t === undefined) {
      throw new InternalError(
        `worker: ${state.requestId} has no token at position ${p} (knows ${prompt.length + state.outputTokenIds.length})`,
      );
    }
    tokens[i] = t;
  }
  return { tokens, blockTable: [...state.blockIds], contextLength: start + count };
}

/**
 * The per-request state of one worker, updated by each step's diff. Applying a diff is O(what
 * changed); a step is rebuilt from the state, never from the scheduler's objects, which is what
 * lets workers live in other processes.
 */
export class RequestStates {
  readonly #states = new Map<string, RequestState>();

  get size(): number {
    return this.#states.size;
  }

  has(requestId: string): boolean {
    return this.#states.has(requestId);
  }

  /** Applies `step` (drop finished, add new, extend cached) and returns the batch rows. */
  apply(step: SchedulerOutput): ScheduledRow[] {
    for (const id of step.finishedRequestIds) this.#states.delete(id);
    const rows: ScheduledRow[] = [];
    for (const n of step.newRequests) {
      const sampler = n.data as SamplerParams | undefined;
      if (sampler === undefined || typeof sampler.seed !== 'string') {
        throw new InvalidArgumentError(
          `step.newRequests[${n.requestId}].data`,
          'the SamplerParams the engine core attaches',
          n.data,
        );
      }
      const state: RequestState = {
        requestId: n.requestId,
        index: n.index,
        promptTokenIds: n.promptTokenIds,
        outputTokenIds: [...n.outputTokenIds],
        numConfirmed: n.outputTokenIds.length,
        blockIds: [...n.blockIds],
        numComputedTokens: n.numComputedTokens,
        sampler,
        eosTokenIds: n.eosTokenIds,
        stopTokenIds: n.stopTokenIds,
        logprobs: n.logprobs,
        pending: [],
      };
      this.#states.set(n.requestId, state);
      rows.push(this.#row(state, n.numComputedTokens, n.numScheduledTokens, n));
    }
    for (const c of step.cachedRequests) {
      const state = this.#states.get(c.requestId);
      if (state === undefined) {
        throw new InternalError(`worker: step ${step.stepId} continues unknown ${c.requestId}`);
      }
      for (const t of c.newTokenIds) this.#confirm(state, t, step.stepId);
      for (const b of c.newBlockIds) state.blockIds.push(b);
      rows.push(this.#row(state, c.numComputedTokens, c.numScheduledTokens, c));
    }
    return rows;
  }

  /** Records a token this worker sampled (the scheduler confirms it in a later diff). */
  recordSampled(state: RequestState, token: number): void {
    state.outputTokenIds.push(token);
  }

  #confirm(state: RequestState, token: number, stepId: number): void {
    const at = state.numConfirmed;
    if (at === state.outputTokenIds.length) {
      state.outputTokenIds.push(token); // sampled elsewhere (another rank)
    } else if (state.outputTokenIds[at] === PENDING_TOKEN) {
      throw new InternalError(
        `worker: step ${stepId} confirms token ${token} of ${state.requestId} at output ${at}, whose sample has not reached this worker yet`,
      );
    } else if (state.outputTokenIds[at] !== token) {
      throw new InternalError(
        `worker: step ${stepId} confirms token ${token} of ${state.requestId} at output ${at}, but this worker sampled ${state.outputTokenIds[at]}`,
      );
    }
    state.numConfirmed = at + 1;
  }

  #row(
    state: RequestState,
    computed: number,
    scheduled: number,
    d: { sample: boolean; maskStopTokens: boolean },
  ): ScheduledRow {
    state.numComputedTokens = computed + scheduled;
    return {
      state,
      start: computed,
      count: scheduled,
      sample: d.sample,
      maskStopTokens: d.maskStopTokens,
    };
  }
}
