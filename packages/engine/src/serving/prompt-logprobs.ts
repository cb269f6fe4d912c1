import type { ScheduledRow } from './request-states.js';

/** The log-probability of one prompt token given the tokens before it, with the top-k there. */
export interface PromptTokenLogprobs {
  tokenId: number;
  logprob: number;
  /** 1 = the most likely token at that position. */
  rank: number;
  topTokenIds: number[];
  topLogprobs: number[];
}

/** Prompt log-probabilities a step computed for one request: prompt positions `from`…. */
export interface PromptLogprobsChunk {
  requestId: string;
  /** Prompt position of the first entry (≥ 1: the first prompt token has none). */
  from: number;
  entries: PromptTokenLogprobs[];
}

/** Whether this row computes prompt positions whose next token's log-probability is wanted. */
export function wantsPromptLogprobs(row: ScheduledRow): boolean {
  const s = row.state;
  // Completion 0 computes the whole prompt (siblings fork it), so only it reports.
  return (
    s.sampler.promptLogprobs !== null && s.index === 0 && row.start < s.promptTokenIds.length - 1
  );
}

/**
 * From the logits of every token of a step ([T, V], batch order), the log-probability (raw logits,
 * as vLLM's prompt_logprobs) of each next prompt token and the `promptLogprobs` most likely tokens
 * at each position, for the rows that want them.
 */
export function promptLogprobs(
  rows: readonly ScheduledRow[],
  allLogits: Float32Array,
  vocab: number,
): PromptLogprobsChunk[] {
  const out: PromptLogprobsChunk[] = [];
  let t = 0;
  for (const row of rows) {
    const base = t;
    t += row.count;
    if (!wantsPromptLogprobs(row)) continue;
    const prompt = row.state.promptTokenIds;
    const k = row.state.sampler.promptLogprobs!;
    const entries: PromptTokenLogprobs[] = [];
    for (let j = 0; j < row.count && row.start + j + 1 < prompt.length; j++) {
      const l = allLogits.subarray((base + j) * vocab, (base + j + 1) * vocab);
      entries.push(tokenLogprobs(l, prompt[row.start + j + 1]!, k));
    }
    out.push({ requestId: row.state.requestId, from: row.start + 1, entries });
  }
  return out;
}

function tokenLogprobs(logits: Float32Array, target: number, k: number): PromptTokenLogprobs {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  const x = logits[target]!;
  let rank = 1;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > x) rank++;
  // Top-k by insertion into a sorted list of k (k ≤ 20).
  const ids: number[] = [];
  const vals: number[] = [];
  for (let i = 0; i < logits.length && k > 0; i++) {
    const v = logits[i]!;
    if (ids.length === k && v <= vals[k - 1]!) continue;
    let at = ids.length;
    while (at > 0 && vals[at - 1]! < v) at--;
    ids.splice(at, 0, i);
    vals.splice(at, 0, v);
    if (ids.length > k) {
      ids.pop();
      vals.pop();
    }
  }
  return {
    tokenId: target,
    logprob: x - lse,
    rank,
    topTokenIds: ids,
    topLogprobs: vals.map((v) => v - lse),
  };
}
