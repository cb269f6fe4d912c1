import { InvalidArgumentError } from '@x/core';
import { type ResolvedSamplingParams, resolveSamplingParams } from './sampling-params.js';
import type { RequestInput } from './scheduler-types.js';

/** What validateRequestInput needs to know about the scheduler. */
export interface RequestInputContext {
  maxModelLen: number;
  eosTokenIds: readonly number[];
  hasDetokenize: boolean;
  now: () => number;
}

/** Checks a RequestInput field by field (typed errors naming the field) and fills defaults. */
export function validateRequestInput(
  input: RequestInput,
  ctx: RequestInputContext,
): {
  sampling: ResolvedSamplingParams;
  priority: number;
  eos: readonly number[];
  arrivalTime: number;
} {
  const { requestId, promptTokenIds: prompt } = input;
  if (typeof requestId !== 'string' || requestId.length === 0) {
    throw new InvalidArgumentError('requestId', 'a non-empty string', requestId);
  }
  if (!Array.isArray(prompt) || prompt.length === 0) {
    throw new InvalidArgumentError('promptTokenIds', 'a non-empty array of token ids', prompt);
  }
  for (let i = 0; i < prompt.length; i++) {
    const t = prompt[i];
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0) {
      throw new InvalidArgumentError(`promptTokenIds[${i}]`, 'a token id (integer >= 0)', t);
    }
  }
  if (prompt.length >= ctx.maxModelLen) {
    throw new InvalidArgumentError(
      'promptTokenIds',
      `at most ${ctx.maxModelLen - 1} tokens (maxModelLen ${ctx.maxModelLen} leaves room for one output token)`,
      `${prompt.length} tokens`,
    );
  }
  const sampling = resolveSamplingParams(input.sampling, ctx.maxModelLen - prompt.length);
  if (sampling.stop.length > 0 && !ctx.hasDetokenize) {
    throw new InvalidArgumentError(
      'sampling.stop',
      'no stop strings (this Scheduler was created without a detokenize callback)',
      sampling.stop,
    );
  }
  const priority = input.priority ?? 0;
  if (!Number.isInteger(priority)) {
    throw new InvalidArgumentError('priority', 'an integer', priority);
  }
  if (input.cacheSalt !== undefined && typeof input.cacheSalt !== 'string') {
    throw new InvalidArgumentError('cacheSalt', 'a string', input.cacheSalt);
  }
  if (input.skipPrefixCache !== undefined && typeof input.skipPrefixCache !== 'boolean') {
    throw new InvalidArgumentError('skipPrefixCache', 'a boolean', input.skipPrefixCache);
  }
  const eos = input.eosTokenIds ?? ctx.eosTokenIds;
  if (!Array.isArray(eos) || eos.some((t) => !Number.isInteger(t) || t < 0)) {
    throw new InvalidArgumentError('eosTokenIds', 'an array of token ids', eos);
  }
  const arrivalTime = input.arrivalTime ?? ctx.now();
  if (typeof arrivalTime !== 'number' || !Number.isFinite(arrivalTime)) {
    throw new InvalidArgumentError('arrivalTime', 'a finite number of ms', arrivalTime);
  }
  return { sampling, priority, eos, arrivalTime };
}
