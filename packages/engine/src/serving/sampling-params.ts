import { InvalidArgumentError } from '@x/core';
import type { SamplingParams } from '@x/scheduler';

/**
 * Every sampling parameter of one request, in vLLM's camelCase names: the scheduler's part (length
 * and stop conditions, n, logprobs) plus the sampler's (temperature, nucleus/top-k/min-p filters,
 * penalties, logit bias, seed) and the detokenizer's. Defaults are vLLM's.
 */
export interface EngineSamplingParams extends SamplingParams {
  /** 0 is greedy. Default 1. */
  temperature?: number;
  /** (0, 1]. Default 1 (off). */
  topP?: number;
  /** -1 or 0 is off, else >= 1. Default off. */
  topK?: number;
  /** [0, 1]. Default 0 (off). */
  minP?: number;
  /** Fixes the draws: the same seed and prompt give the same output. n > 1 uses seed + index. */
  seed?: number;
  /** [-2, 2]. Default 0. */
  presencePenalty?: number;
  /** [-2, 2]. Default 0. */
  frequencyPenalty?: number;
  /** > 0; 1 is off. Default 1. */
  repetitionPenalty?: number;
  /** token id → value in [-100, 100] added to its logit (OpenAI `logit_bias`). */
  logitBias?: Readonly<Record<string, number>>;
  /** Leave special tokens out of the text. Default true. */
  skipSpecialTokens?: boolean;
  /** Keep a matched stop string in the text. Default false. */
  includeStopStrInOutput?: boolean;
  /**
   * Log-probabilities of the prompt's tokens with this many top tokens each (vLLM
   * prompt_logprobs), or null. Such a request computes its whole prompt (no prefix-cache hits).
   */
  promptLogprobs?: number | null;
}

/** What a worker needs to sample a request's tokens (sent once, in NewRequestData.data). */
export interface SamplerParams {
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  /** 64-bit seed as a decimal string (structured-clone and JSON safe); completion i adds i. */
  seed: string;
  presencePenalty: number;
  frequencyPenalty: number;
  repetitionPenalty: number;
  /** [tokenId, bias] pairs, or null. */
  logitBias: Array<[number, number]> | null;
  /** Top log-probabilities per prompt token, or null for none. */
  promptLogprobs: number | null;
}

/** Greedy requests and requests with temperature below this are sampled greedily (vLLM). */
const GREEDY_TEMPERATURE = 1e-5;

function number(
  where: string,
  value: unknown,
  fallback: number,
  ok: (x: number) => boolean,
  expected: string,
): number {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || !ok(value)) {
    throw new InvalidArgumentError(where, expected, value);
  }
  return value;
}

/**
 * Checks the sampler's parameters of `p` (errors name the field under `where`) and resolves them;
 * `fallbackSeed` is used when the request has none (drawn by the engine, so a preempted request
 * replays the same draws).
 */
export function resolveSamplerParams(
  p: EngineSamplingParams,
  vocabSize: number,
  fallbackSeed: bigint,
  where = 'sampling',
): SamplerParams {
  const temperature = number(
    `${where}.temperature`,
    p.temperature,
    1,
    (x) => x >= 0,
    'a number >= 0',
  );
  const topP = number(`${where}.topP`, p.topP, 1, (x) => x > 0 && x <= 1, 'a number in (0, 1]');
  const topK = number(
    `${where}.topK`,
    p.topK,
    0,
    (x) => Number.isInteger(x) && x >= -1,
    'an integer >= -1 (-1 or 0 is off)',
  );
  const minP = number(`${where}.minP`, p.minP, 0, (x) => x >= 0 && x <= 1, 'a number in [0, 1]');
  const penalty = (name: 'presencePenalty' | 'frequencyPenalty') =>
    number(`${where}.${name}`, p[name], 0, (x) => x >= -2 && x <= 2, 'a number in [-2, 2]');
  const repetitionPenalty = number(
    `${where}.repetitionPenalty`,
    p.repetitionPenalty,
    1,
    (x) => x > 0,
    'a number > 0',
  );
  let seed = fallbackSeed;
  if (p.seed !== undefined && p.seed !== null) {
    if (!Number.isSafeInteger(p.seed)) {
      throw new InvalidArgumentError(`${where}.seed`, 'a safe integer', p.seed);
    }
    seed = BigInt(p.seed);
  }
  let logitBias: Array<[number, number]> | null = null;
  if (p.logitBias !== undefined && p.logitBias !== null) {
    if (typeof p.logitBias !== 'object' || Array.isArray(p.logitBias)) {
      throw new InvalidArgumentError(
        `${where}.logitBias`,
        'an object of token id → bias',
        p.logitBias,
      );
    }
    logitBias = Object.entries(p.logitBias).map(([k, v]) => {
      const id = Number(k);
      if (!/^\d+$/.test(k) || id >= vocabSize) {
        throw new InvalidArgumentError(
          `${where}.logitBias`,
          `token ids in [0, ${vocabSize}) as keys`,
          k,
        );
      }
      const bias = number(
        `${where}.logitBias[${k}]`,
        v,
        0,
        (x) => x >= -100 && x <= 100,
        'a number in [-100, 100]',
      );
      return [id, bias];
    });
    if (logitBias.length === 0) logitBias = null;
  }
  let promptLogprobs: number | null = null;
  if (p.promptLogprobs !== undefined && p.promptLogprobs !== null) {
    const v = p.promptLogprobs;
    if (!Number.isInteger(v) || v < 0 || v > 20) {
      throw new InvalidArgumentError(`${where}.promptLogprobs`, 'an integer in [0, 20]', v);
    }
    promptLogprobs = v;
  }
  for (const flag of ['skipSpecialTokens', 'includeStopStrInOutput'] as const) {
    const v = p[flag];
    if (v !== undefined && typeof v !== 'boolean') {
      throw new InvalidArgumentError(`${where}.${flag}`, 'a boolean', v);
    }
  }
  return {
    temperature: temperature < GREEDY_TEMPERATURE ? 0 : temperature,
    topP,
    topK: Math.max(topK, 0),
    minP,
    seed: BigInt.asUintN(64, seed).toString(),
    presencePenalty: penalty('presencePenalty'),
    frequencyPenalty: penalty('frequencyPenalty'),
    repetitionPenalty,
    logitBias,
    promptLogprobs,
  };
}

/** The scheduler's subset of `p` (what Scheduler.addRequest validates and acts on). */
export function schedulerSampling(p: EngineSamplingParams): SamplingParams {
  const out: SamplingParams = {};
  if (p.maxTokens !== undefined) out.maxTokens = p.maxTokens;
  if (p.minTokens !== undefined) out.minTokens = p.minTokens;
  if (p.stop !== undefined) out.stop = p.stop;
  if (p.stopTokenIds !== undefined) out.stopTokenIds = p.stopTokenIds;
  if (p.ignoreEos !== undefined) out.ignoreEos = p.ignoreEos;
  if (p.n !== undefined) out.n = p.n;
  if (p.logprobs !== undefined) out.logprobs = p.logprobs;
  return out;
}

/** Whether a request's draws depend on the prompt and output tokens (penalties are on). */
export function usesPenalties(s: SamplerParams): boolean {
  return s.repetitionPenalty !== 1 || s.presencePenalty !== 0 || s.frequencyPenalty !== 0;
}
