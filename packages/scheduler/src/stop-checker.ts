import type { FinishReason, Request } from './request.js';

/** Turns token ids into text; the engine passes its tokenizer's decode (skip special tokens). */
export type Detokenize = (tokenIds: readonly number[]) => string;

/** A stop string found in the output: which one, and how many characters to cut off the text. */
export interface StopStringMatch {
  stop: string;
  /** Characters to drop from the end of the decoded output: the stop string and what followed. */
  trimChars: number;
}

/**
 * Finds stop strings in a request's output as tokens arrive, decoding only a tail window so
 * each step costs O(longest stop string), not O(output length).
 *
 * Both decodes start at the same token, so tokenizer artifacts at the window's start (a dropped
 * leading space, a split UTF-8 sequence) are identical in both and cancel out; a match must end
 * in the text the newest tokens added, so each occurrence is found exactly once.
 */
export class StopStringMatcher {
  private readonly stops: readonly string[];
  private readonly windowTokens: number;

  constructor(
    stops: readonly string[],
    private readonly detokenize: Detokenize,
  ) {
    this.stops = stops;
    const longest = Math.max(...stops.map((s) => s.length));
    // A token decodes to >= 1/4 character (byte-fallback tokens); 4 chars of slack on the left.
    this.windowTokens = 4 * longest + 4;
  }

  /** Looks for a stop string that ends within the text of the last `numNew` tokens. */
  match(
    tokenIds: readonly number[],
    numPromptTokens: number,
    numNew: number,
  ): StopStringMatch | null {
    const end = tokenIds.length;
    const start = Math.max(0, end - numNew - this.windowTokens);
    const cur = this.detokenize(tokenIds.slice(start, end));
    let before = this.detokenize(tokenIds.slice(start, end - numNew));
    while (before.endsWith('\uFFFD')) before = before.slice(0, -1);
    // The prompt's text is never searched: a stop string must start inside the output.
    const outputStart =
      start < numPromptTokens ? this.detokenize(tokenIds.slice(start, numPromptTokens)).length : 0;
    let best: StopStringMatch | null = null;
    let bestAt = Number.POSITIVE_INFINITY;
    for (const stop of this.stops) {
      const from = Math.max(outputStart, before.length - stop.length + 1, 0);
      const at = cur.indexOf(stop, from);
      if (at >= 0 && at < bestAt) {
        bestAt = at;
        best = { stop, trimChars: cur.length - at };
      }
    }
    return best;
  }
}

/** Why a request stops after its newest token, or null to continue. */
export interface StopDecision {
  reason: FinishReason;
  stopReason: number | string | null;
  trimChars: number;
}

/**
 * Stop conditions after one appended token, in vLLM's order: max_model_len and max_tokens cap
 * the length; once min_tokens is reached, eos (unless ignore_eos), stop_token_ids and stop
 * strings stop the request — a stop string also wins over a length cap on the same token.
 */
export function checkStop(request: Request, maxModelLen: number): StopDecision | null {
  const numOutput = request.numOutputTokens;
  const capped = request.numTokens >= maxModelLen || numOutput >= request.sampling.maxTokens;
  if (numOutput >= request.sampling.minTokens) {
    const m = request.stopMatcher?.match(request.tokenIds, request.numPromptTokens, 1);
    if (m) return { reason: 'stop', stopReason: m.stop, trimChars: m.trimChars };
    const last = request.tokenIds[request.numTokens - 1]!;
    if (!capped && !request.sampling.ignoreEos && request.eosTokenIds.includes(last)) {
      return { reason: 'stop', stopReason: null, trimChars: 0 };
    }
    if (!capped && request.sampling.stopTokenIds.includes(last)) {
      return { reason: 'stop', stopReason: last, trimChars: 0 };
    }
  }
  return capped ? { reason: 'length', stopReason: null, trimChars: 0 } : null;
}
