import { InternalError } from '@x/core';
import type { ExecuteResult, SequenceStep } from '../model-runner.js';
import { PENDING_TOKEN, type PendingSample, type ScheduledRow } from './request-states.js';
import { usesPenalties } from './sampling-params.js';

// How a pipelined worker builds step N+1 before step N's sampled ids are on the host: a token
// still being sampled is a PENDING_TOKEN placeholder in its request's outputTokenIds; when it is
// the last token of a row and step N (the runner's previous step) samples it, the runner feeds
// it back on the device (SequenceStep.feedback); otherwise the worker waits for it on the host.

/** A step handed to the runner: its result, and when the tokens it sampled are on the host. */
export interface SubmittedStep {
  readonly result: Promise<ExecuteResult>;
  /** Resolves once each token it sampled replaced its placeholder in outputTokenIds. */
  readonly filled: Promise<void>;
}

/**
 * The steps whose sampled ids must be on the host before `rows` can be built on top of `last`
 * (the step submitted just before): a pending token that is not the last of its row or that an
 * older step samples, and every pending token of a row with penalties (the sampler reads the
 * output ids when it is enqueued).
 */
export function hostWaits(
  rows: readonly ScheduledRow[],
  last: SubmittedStep | undefined,
): Promise<void>[] {
  const waits = new Set<Promise<void>>();
  for (const r of rows) {
    const { state } = r;
    const penalties = r.sample && usesPenalties(state.sampler);
    const end = r.start + r.count;
    for (const p of state.pending) {
      const pos = state.promptTokenIds.length + p.index;
      const inStep = pos >= r.start && pos < end;
      const fedBack = inStep && pos === end - 1 && p.step === last;
      if ((inStep && !fedBack) || penalties) waits.add(p.step.filled);
    }
  }
  return [...waits];
}

/**
 * The runner's input for a row of a pipelined step: known tokens, and the last one fed back from
 * `last` when it is still being sampled there (after hostWaits resolved, no other is pending).
 */
export function pipelinedStep(row: ScheduledRow, last: SubmittedStep | undefined): SequenceStep {
  const { state, start, count } = row;
  const prompt = state.promptTokenIds;
  const tokens: number[] = [];
  let feedback: number | undefined;
  for (let i = 0; i < count; i++) {
    const p = start + i;
    const t = p < prompt.length ? prompt[p] : state.outputTokenIds[p - prompt.length];
    if (t === undefined) {
      throw new InternalError(
        `worker: ${state.requestId} has no token at position ${p} (knows ${prompt.length + state.outputTokenIds.length})`,
      );
    }
    if (t !== PENDING_TOKEN) {
      tokens.push(t);
      continue;
    }
    const ps = state.pending.find((x) => x.index === p - prompt.length);
    if (ps === undefined || ps.step !== last || i !== count - 1) {
      throw new InternalError(
        `worker: ${state.requestId}'s token at position ${p} is still being sampled by an earlier step`,
      );
    }
    feedback = ps.row;
  }
  return {
    tokens,
    ...(feedback === undefined ? {} : { feedback }),
    blockTable: [...state.blockIds],
    contextLength: start + count,
  };
}

/**
 * Marks the token each sampling row of `rows` gets from `result` as pending (a placeholder at the
 * end of its outputTokenIds) and returns the submitted step, whose `filled` puts the sampled ids
 * in place once the result is read. Call right after handing the step to the runner.
 */
export function submitted(
  rows: readonly ScheduledRow[],
  result: Promise<ExecuteResult>,
): SubmittedStep {
  const marks: Array<[ScheduledRow['state'], PendingSample]> = [];
  const step = {
    result,
    filled: result.then((out) => {
      for (const [state, ps] of marks) {
        state.outputTokenIds[ps.index] = out.sampled!.tokenIds[ps.row]!;
        state.pending.splice(state.pending.indexOf(ps), 1);
      }
    }),
  };
  step.filled.catch(() => undefined); // awaited where needed; this only marks it handled
  rows.forEach((r, row) => {
    if (!r.sample) return;
    const ps: PendingSample = { index: r.state.outputTokenIds.length, row, step };
    r.state.outputTokenIds.push(PENDING_TOKEN);
    r.state.pending.push(ps);
    marks.push([r.state, ps]);
  });
  return step;
}
