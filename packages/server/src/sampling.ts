import type { EngineSamplingParams, GenerationDefaults } from '@x/engine';
import { badField, HttpError } from './errors.js';
import type { Fields } from './fields.js';

/** Most top log-probabilities per token (vLLM's default --max-logprobs). */
export const MAX_LOGPROBS = 20;
/** Most completions per request. */
export const MAX_N = 256;

/** The sampling and streaming fields of a completion or chat request, checked. */
export interface ParsedSampling {
  sampling: EngineSamplingParams;
  /** max_tokens (completions; default 16) or max_completion_tokens / max_tokens (chat). */
  maxTokens: number | undefined;
  n: number;
  stream: boolean;
  includeUsage: boolean;
  continuousUsage: boolean;
  /** Top log-probabilities per token, or null for none. */
  logprobs: number | null;
  priority: number | undefined;
  cacheSalt: string | undefined;
}

/**
 * Reads the OpenAI / vLLM sampling fields (snake_case) into the engine's parameters, applying
 * the model's generation_config.json defaults where the request leaves a field out, as vLLM does.
 * Every wrong field is a 400 that names it.
 */
export function parseSampling(
  f: Fields,
  kind: 'completion' | 'chat',
  defaults: GenerationDefaults,
  vocabSize: number,
): ParsedSampling {
  const s: EngineSamplingParams = {};
  const temperature = f.number('temperature', 0, 1e6) ?? defaults.temperature;
  if (temperature !== undefined) s.temperature = temperature;
  const topP = f.number('top_p', 0, 1, { minOpen: true }) ?? defaults.topP;
  if (topP !== undefined) s.topP = topP;
  const topK = f.int('top_k', -1) ?? defaults.topK;
  if (topK !== undefined) s.topK = topK;
  const minP = f.number('min_p', 0, 1) ?? defaults.minP;
  if (minP !== undefined) s.minP = minP;
  const rep =
    f.number('repetition_penalty', 0, 1e6, { minOpen: true }) ?? defaults.repetitionPenalty;
  if (rep !== undefined) s.repetitionPenalty = rep;
  const presence = f.number('presence_penalty', -2, 2);
  if (presence !== undefined) s.presencePenalty = presence;
  const frequency = f.number('frequency_penalty', -2, 2);
  if (frequency !== undefined) s.frequencyPenalty = frequency;
  const seed = f.int('seed', Number.MIN_SAFE_INTEGER);
  if (seed !== undefined) s.seed = seed;
  const stop = f.strings('stop');
  if (stop !== undefined && stop.length > 0) s.stop = stop;
  const stopIds = f.intArray('stop_token_ids', 0, vocabSize - 1);
  if (stopIds !== undefined) s.stopTokenIds = stopIds;
  const ignoreEos = f.bool('ignore_eos');
  if (ignoreEos !== undefined) s.ignoreEos = ignoreEos;
  const minTokens = f.int('min_tokens', 0);
  if (minTokens !== undefined) s.minTokens = minTokens;
  const skip = f.bool('skip_special_tokens');
  if (skip !== undefined) s.skipSpecialTokens = skip;
  const includeStop = f.bool('include_stop_str_in_output');
  if (includeStop !== undefined) s.includeStopStrInOutput = includeStop;
  const bias = f.object('logit_bias');
  if (bias !== undefined) {
    const out: Record<string, number> = {};
    for (const k of bias.keys()) {
      if (!/^\d+$/.test(k) || Number(k) >= vocabSize) {
        throw badField(`logit_bias.${k}`, `a token id in [0, ${vocabSize}) as key`, k);
      }
      out[k] = bias.number(k, -100, 100)!;
    }
    if (Object.keys(out).length > 0) s.logitBias = out;
  }
  const n = f.int('n', 1, MAX_N) ?? 1;
  s.n = n;
  const bestOf = f.int('best_of', 1, MAX_N);
  if (bestOf !== undefined && bestOf !== n) {
    throw new HttpError(400, 'best_of must equal n (beam-style best_of is not supported)', {
      param: 'best_of',
    });
  }
  if (f.bool('use_beam_search') === true) {
    throw new HttpError(400, 'beam search is not supported', { param: 'use_beam_search' });
  }

  let logprobs: number | null = null;
  if (kind === 'completion') {
    logprobs = f.int('logprobs', 0, MAX_LOGPROBS) ?? null;
  } else {
    const want = f.bool('logprobs') ?? false;
    const top = f.int('top_logprobs', 0, MAX_LOGPROBS);
    if (top !== undefined && !want) {
      throw new HttpError(400, 'top_logprobs requires logprobs to be true', {
        param: 'top_logprobs',
      });
    }
    logprobs = want ? (top ?? 0) : null;
  }
  if (logprobs !== null) s.logprobs = logprobs;

  const maxTokens =
    kind === 'completion'
      ? (f.int('max_tokens', 0) ?? 16)
      : (f.int('max_completion_tokens', 1) ?? f.int('max_tokens', 1));
  const stream = f.bool('stream') ?? false;
  const so = f.object('stream_options');
  if (so !== undefined && !stream) {
    throw new HttpError(400, 'stream_options can only be set when stream is true', {
      param: 'stream_options',
    });
  }
  const priority = f.int('priority', Number.MIN_SAFE_INTEGER);
  const cacheSalt = f.string('cache_salt');
  if (cacheSalt !== undefined && cacheSalt.length === 0) {
    throw badField('cache_salt', 'a non-empty string', cacheSalt);
  }
  return {
    sampling: s,
    maxTokens,
    n,
    stream,
    includeUsage: so?.bool('include_usage') ?? false,
    continuousUsage: so?.bool('continuous_usage_stats') ?? false,
    logprobs,
    priority,
    cacheSalt,
  };
}

/**
 * The max_tokens to run with: the request's (or none), capped by generation_config's
 * max_new_tokens and by what the context leaves; a request that cannot fit is a 400.
 */
export function resolveMaxTokens(
  requested: number | undefined,
  promptLength: number,
  maxModelLen: number,
  defaults: GenerationDefaults,
  promptField: string,
): number {
  if (promptLength >= maxModelLen) {
    throw new HttpError(
      400,
      `This model's maximum context length is ${maxModelLen} tokens. However, your request has ` +
        `${promptLength} input tokens. Please reduce the length of the input.`,
      { param: promptField },
    );
  }
  if (requested !== undefined && promptLength + requested > maxModelLen) {
    throw new HttpError(
      400,
      `This model's maximum context length is ${maxModelLen} tokens. However, you requested ` +
        `${promptLength + requested} tokens (${promptLength} in the ${promptField === 'messages' ? 'messages' : 'prompt'}, ` +
        `${requested} in the completion). Please reduce the length of the ${promptField === 'messages' ? 'messages' : 'prompt'} or completion.`,
      { param: 'max_tokens' },
    );
  }
  const limits = [maxModelLen - promptLength, requested, defaults.maxNewTokens].filter(
    (x): x is number => x !== undefined,
  );
  return Math.min(...limits);
}
