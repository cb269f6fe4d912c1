import { InvalidArgumentError } from '@x/core';
import { MAX_LOGPROBS } from './sampler.js';
import type { EngineRequest } from './types.js';

/**
 * Checks what the scheduler and the sampler cannot check on their own before a request reaches a
 * step: token ids must index the vocabulary (a bad id would fail the whole batch on the device),
 * log-probabilities are bounded. Errors name the field (`promptTokenIds[3]`,
 * `sampling.stopTokenIds[0]`); the scheduler validates the rest of the shape.
 */
export function validateEngineRequest(r: EngineRequest, vocabSize: number): EngineRequest {
  if (typeof r !== 'object' || r === null) {
    throw new InvalidArgumentError('request', 'an EngineRequest object', r);
  }
  const ids = r.promptTokenIds;
  if (!Array.isArray(ids)) {
    throw new InvalidArgumentError('promptTokenIds', 'an array of token ids', ids);
  }
  for (const [i, t] of ids.entries()) checkId(`promptTokenIds[${i}]`, t, vocabSize);
  const s = r.sampling ?? {};
  if (typeof s !== 'object' || s === null) {
    throw new InvalidArgumentError('sampling', 'an object of sampling parameters', s);
  }
  if (Array.isArray(s.stopTokenIds)) {
    for (const [i, t] of s.stopTokenIds.entries()) {
      checkId(`sampling.stopTokenIds[${i}]`, t, vocabSize);
    }
  }
  if (s.logprobs !== undefined && s.logprobs !== null) {
    if (!Number.isInteger(s.logprobs) || s.logprobs < 0 || s.logprobs > MAX_LOGPROBS) {
      throw new InvalidArgumentError(
        'sampling.logprobs',
        `an integer in [0, ${MAX_LOGPROBS}]`,
        s.logprobs,
      );
    }
  }
  if (s.stop !== undefined && !Array.isArray(s.stop)) {
    throw new InvalidArgumentError('sampling.stop', 'an array of strings', s.stop);
  }
  return { ...r, sampling: s };
}

function checkId(where: string, t: unknown, vocabSize: number): void {
  if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= vocabSize) {
    throw new InvalidArgumentError(where, `a token id in [0, ${vocabSize})`, t);
  }
}
