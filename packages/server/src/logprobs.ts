import type { OutputLogprob } from '@x/engine';

/** vLLM clamps -inf to this so the JSON stays valid. */
const FLOOR = -9999;

const clamp = (x: number) => Math.max(x, FLOOR);

/** The completions API's logprobs object (legacy OpenAI format). */
export interface CompletionLogprobs {
  text_offset: number[];
  token_logprobs: Array<number | null>;
  tokens: string[];
  top_logprobs: Array<Record<string, number> | null>;
}

/**
 * vLLM's order of a step's candidates: the sampled token first, then the top-k by rank (a token
 * appears once). The completions API shows the first `num + 1`, the chat API the first `num`.
 */
function candidates(lp: OutputLogprob): Array<{ token: string; logprob: number }> {
  const out = [{ tokenId: lp.tokenId, token: lp.token, logprob: lp.logprob }];
  for (const t of lp.top) if (t.tokenId !== lp.tokenId) out.push(t);
  return out;
}

/** A token without log-probabilities: the first prompt token of an echo. */
export interface MissingLogprob {
  token: string;
  missing: true;
}

/** Completion logprobs for `lps`; text offsets continue from `textOffset` (streaming). */
export function completionLogprobs(
  lps: ReadonlyArray<OutputLogprob | MissingLogprob>,
  num: number,
  textOffset: number,
): CompletionLogprobs {
  const out: CompletionLogprobs = {
    text_offset: [],
    token_logprobs: [],
    tokens: [],
    top_logprobs: [],
  };
  let offset = textOffset;
  for (const lp of lps) {
    out.text_offset.push(offset);
    offset += lp.token.length;
    out.tokens.push(lp.token);
    if ('missing' in lp) {
      out.token_logprobs.push(null);
      out.top_logprobs.push(null);
      continue;
    }
    out.token_logprobs.push(clamp(lp.logprob));
    const top: Record<string, number> = {};
    for (const c of candidates(lp).slice(0, num + 1)) {
      if (!(c.token in top)) top[c.token] = clamp(c.logprob);
    }
    out.top_logprobs.push(top);
  }
  return out;
}

function bytes(s: string): number[] {
  return [...Buffer.from(s, 'utf8')];
}

/** One token of the chat API's logprobs.content. */
export interface ChatLogprobEntry {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: Array<{ token: string; logprob: number; bytes: number[] }>;
}

/** Chat logprobs entries for `lps` with `num` top log-probabilities each. */
export function chatLogprobs(lps: readonly OutputLogprob[], num: number): ChatLogprobEntry[] {
  return lps.map((lp) => ({
    token: lp.token,
    logprob: clamp(lp.logprob),
    bytes: bytes(lp.token),
    top_logprobs: candidates(lp)
      .slice(0, num)
      .map((c) => ({ token: c.token, logprob: clamp(c.logprob), bytes: bytes(c.token) })),
  }));
}
