import { InvalidArgumentError } from '@x/core';
import type { Request } from './request.js';
import type {
  CachedRequestData,
  ModelOutput,
  NewRequestData,
  SampledTokens,
  SchedulerOutput,
} from './scheduler-types.js';

/** A request's share of one step: `numTokens` tokens from its numComputedTokens. */
export interface Scheduled {
  request: Request;
  numTokens: number;
}

/**
 * The diff for the workers (SchedulerOutput) of one step, and the requests that sample in it.
 * New requests (first sight, or again after a preemption) go in full, known ones as what changed.
 * Advances each request's numComputedTokens and sent counters; a request that samples now waits
 * for that step (inFlightSteps). `release` frees the held siblings of a request that finishes
 * its prompt in this step (n > 1).
 */
export function buildStepOutput(
  stepId: number,
  scheduled: readonly Scheduled[],
  finishedRequestIds: string[],
  release: (parentRequestId: string) => void,
): { output: SchedulerOutput; sampling: Request[] } {
  const newRequests: NewRequestData[] = [];
  const cachedRequests: CachedRequestData[] = [];
  const sampling: Request[] = [];
  let total = 0;
  for (const { request: r, numTokens } of scheduled) {
    const computed = r.numComputedTokens;
    // Tokens the workers will know: the confirmed ones plus those still being sampled.
    const pending = r.inFlightSteps.length;
    const sample = computed + numTokens >= r.numTokens + pending;
    const maskStopTokens = sample && r.numOutputTokens + pending < r.sampling.minTokens;
    if (!r.sentToWorkers) {
      newRequests.push({
        requestId: r.requestId,
        parentRequestId: r.parentRequestId,
        index: r.index,
        promptTokenIds: r.promptTokenIds,
        outputTokenIds: r.outputTokenIds,
        blockIds: [...r.blockIds],
        numComputedTokens: computed,
        numScheduledTokens: numTokens,
        sample,
        maskStopTokens,
        eosTokenIds: r.sampling.ignoreEos ? [] : r.eosTokenIds,
        stopTokenIds: r.sampling.stopTokenIds,
        logprobs: r.sampling.logprobs,
        data: r.data,
      });
      r.sentToWorkers = true;
    } else {
      cachedRequests.push({
        requestId: r.requestId,
        newTokenIds: r.tokenIds.slice(r.numTokensSent),
        newBlockIds: r.blockIds.slice(r.numBlocksSent),
        numComputedTokens: computed,
        numScheduledTokens: numTokens,
        sample,
        maskStopTokens,
      });
    }
    r.numTokensSent = r.numTokens;
    r.numBlocksSent = r.blockIds.length;
    r.numComputedTokens = computed + numTokens;
    total += numTokens;
    if (sample) {
      r.inFlightSteps.push(stepId);
      sampling.push(r);
      if (computed < r.numPromptTokens) release(r.parentRequestId);
    }
  }
  return {
    output: {
      stepId,
      newRequests,
      cachedRequests,
      totalNumScheduledTokens: total,
      finishedRequestIds,
    },
    sampling,
  };
}

/**
 * Checks a step's ModelOutput against what the step expects (`expected`: the requests scheduled
 * with sample=true, undefined if the step is unknown) before anything changes. Returns its samples.
 */
export function validateModelOutput(
  output: ModelOutput,
  expected: readonly Request[] | undefined,
  pendingSteps: readonly number[],
): SampledTokens[] {
  if (!expected) {
    throw new InvalidArgumentError(
      'output.stepId',
      `a step returned by schedule() and not yet updated (${pendingSteps.join(', ') || 'none'})`,
      output?.stepId,
    );
  }
  const sampled = output.sampled;
  if (!Array.isArray(sampled)) {
    throw new InvalidArgumentError('output.sampled', 'an array', sampled);
  }
  const got = new Set<string>();
  sampled.forEach((s, i) => {
    const t = s?.tokenIds;
    if (!Array.isArray(t) || t.length !== 1 || !Number.isInteger(t[0]) || t[0]! < 0) {
      throw new InvalidArgumentError(`output.sampled[${i}].tokenIds`, 'one token id', t);
    }
    got.add(s.requestId);
  });
  for (const r of expected) {
    if (r.inFlightSteps[0] === output.stepId && !got.has(r.requestId)) {
      throw new InvalidArgumentError(
        'output.sampled',
        `a token for every request scheduled with sample=true in step ${output.stepId}`,
        `none for ${r.requestId}`,
      );
    }
  }
  return sampled;
}
