import { InvalidArgumentError } from '@x/core';

/**
 * The part of a request's sampling parameters the scheduler acts on (OpenAI / vLLM names in
 * camelCase: max_tokens → maxTokens, stop_token_ids → stopTokenIds, …). Temperature, top_p, seed
 * and the rest belong to the sampler; the engine passes them through `RequestInput.data`.
 */
export interface SamplingParams {
  /** Most output tokens to generate (finish reason `length`). Default: until maxModelLen. */
  maxTokens?: number;
  /** Output tokens before eos, stop_token_ids and stop strings may end the request. Default 0. */
  minTokens?: number;
  /** Stop strings; matched on detokenized output text and not part of the returned text. */
  stop?: readonly string[];
  /** Token ids that end the request (the token is kept in the output). */
  stopTokenIds?: readonly number[];
  /** Keep generating past eos. Default false. */
  ignoreEos?: boolean;
  /** Number of independent completions sharing the prompt's KV blocks. Default 1. */
  n?: number;
  /** Number of top log-probabilities per output token, or null for none. Default null. */
  logprobs?: number | null;
}

/** SamplingParams with every default filled in and every field checked. */
export interface ResolvedSamplingParams {
  readonly maxTokens: number;
  readonly minTokens: number;
  readonly stop: readonly string[];
  readonly stopTokenIds: readonly number[];
  readonly ignoreEos: boolean;
  readonly n: number;
  readonly logprobs: number | null;
}

const MAX_N = 256;
const MAX_LOGPROBS = 1024;

function integer(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER) {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new InvalidArgumentError(name, `an integer ${range}`, value);
  }
  return value;
}

/** Checks `params` (named `where` in errors) and fills defaults; `maxTokensLimit` caps maxTokens. */
export function resolveSamplingParams(
  params: SamplingParams | undefined,
  maxTokensLimit: number,
  where = 'sampling',
): ResolvedSamplingParams {
  const p = params ?? {};
  if (typeof p !== 'object' || p === null) {
    throw new InvalidArgumentError(where, 'an object of sampling parameters', p);
  }
  const maxTokens =
    p.maxTokens === undefined ? maxTokensLimit : integer(`${where}.maxTokens`, p.maxTokens, 1);
  const minTokens = p.minTokens === undefined ? 0 : integer(`${where}.minTokens`, p.minTokens, 0);
  if (minTokens > maxTokens) {
    throw new InvalidArgumentError(
      `${where}.minTokens`,
      `at most maxTokens (${maxTokens})`,
      minTokens,
    );
  }
  const stop = p.stop ?? [];
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw new InvalidArgumentError(`${where}.stop`, 'an array of non-empty strings', stop);
  }
  const stopTokenIds = p.stopTokenIds ?? [];
  if (!Array.isArray(stopTokenIds)) {
    throw new InvalidArgumentError(`${where}.stopTokenIds`, 'an array of token ids', stopTokenIds);
  }
  for (const [i, t] of stopTokenIds.entries()) integer(`${where}.stopTokenIds[${i}]`, t, 0);
  const ignoreEos = p.ignoreEos ?? false;
  if (typeof ignoreEos !== 'boolean') {
    throw new InvalidArgumentError(`${where}.ignoreEos`, 'a boolean', ignoreEos);
  }
  const n = p.n === undefined ? 1 : integer(`${where}.n`, p.n, 1, MAX_N);
  const logprobs =
    p.logprobs === undefined || p.logprobs === null
      ? null
      : integer(`${where}.logprobs`, p.logprobs, 0, MAX_LOGPROBS);
  return {
    maxTokens: Math.min(maxTokens, maxTokensLimit),
    minTokens,
    stop: [...stop],
    stopTokenIds: [...stopTokenIds],
    ignoreEos,
    n,
    logprobs,
  };
}
