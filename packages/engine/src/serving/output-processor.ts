import type { RequestOutput, TokenLogprobs } from '@x/scheduler';
import type { PromptLogprobsChunk } from './prompt-logprobs.js';
import { IncrementalText, type TextDecoder } from './text-decoder.js';
import type { AbortReason, CompletionOutput, OutputLogprob } from './types.js';

/** How a completion's text is produced. */
export interface TextOptions {
  stop: readonly string[];
  skipSpecialTokens: boolean;
  includeStopStrInOutput: boolean;
}

interface CompletionText {
  text: IncrementalText;
  /** Characters of text already emitted. */
  sent: number;
  /** Trailing characters held back while a stop string may still be completing. */
  holdback: number;
  includeStop: boolean;
  queueTimeMs: number | undefined;
  queueReported: boolean;
  /** Prompt log-probabilities gathered over prefill chunks (index 0 is null), until reported. */
  prompt: Array<OutputLogprob | null> | null;
}

/**
 * Turns the scheduler's per-step RequestOutputs (token ids) into CompletionOutputs (text deltas,
 * log-probabilities with token text). Runs in the engine-core thread so the frontend only formats.
 * Text that could be the start of a stop string is held back (longest stop − 1 characters, as
 * vLLM does) until the next token or the finish; a stop string and what followed it are cut
 * (the scheduler reports how much: stopTrimChars).
 */
export class OutputProcessor {
  readonly #decoder: TextDecoder;
  readonly #completions = new Map<string, CompletionText>();

  constructor(decoder: TextDecoder) {
    this.#decoder = decoder;
  }

  get size(): number {
    return this.#completions.size;
  }

  /** Registers a completion (its id as the scheduler knows it). */
  add(
    completionId: string,
    promptTokenIds: readonly number[],
    o: TextOptions,
    wantsPromptLogprobs = false,
  ): void {
    const longest = Math.max(0, ...o.stop.map((s) => s.length));
    this.#completions.set(completionId, {
      text: new IncrementalText(this.#decoder, promptTokenIds, o.skipSpecialTokens),
      sent: 0,
      holdback: o.includeStopStrInOutput ? 0 : Math.max(0, longest - 1),
      includeStop: o.includeStopStrInOutput,
      queueTimeMs: undefined,
      queueReported: false,
      prompt: wantsPromptLogprobs
        ? Array.from({ length: promptTokenIds.length }, () => null)
        : null,
    });
  }

  /** Stores prompt log-probabilities a step computed (a recompute overwrites the same entries). */
  addPromptLogprobs(chunk: PromptLogprobsChunk): void {
    const c = this.#completions.get(chunk.requestId);
    if (!c || c.prompt === null) return;
    chunk.entries.forEach((e, i) => {
      c.prompt![chunk.from + i] = this.#logprob(e.tokenId, e);
    });
  }

  /** Records when a completion was first scheduled (reported with its first output). */
  markScheduled(completionId: string, queueTimeMs: number): void {
    const c = this.#completions.get(completionId);
    if (c && c.queueTimeMs === undefined) c.queueTimeMs = queueTimeMs;
  }

  /** Drops a completion without output (its request was never accepted). */
  remove(completionId: string): void {
    this.#completions.delete(completionId);
  }

  /** The CompletionOutput for one RequestOutput; forgets the completion when it finished. */
  process(o: RequestOutput, abortReason: AbortReason = 'client'): CompletionOutput {
    const c = this.#completions.get(o.requestId);
    let text = '';
    if (c) {
      text = this.#text(c, o);
      if (o.finishReason !== null) this.#completions.delete(o.requestId);
    }
    const out: CompletionOutput = {
      requestId: o.parentRequestId,
      index: o.index,
      tokenIds: o.newTokenIds,
      text,
      logprobs:
        o.newLogprobs === null
          ? null
          : o.newLogprobs.map((lp, i) => this.#logprob(o.newTokenIds[i]!, lp)),
      finishReason: o.finishReason,
      stopReason: o.stopReason,
      numPromptTokens: o.numPromptTokens,
      numCachedTokens: o.numCachedTokens,
      numOutputTokens: o.numOutputTokens,
    };
    if (o.finishReason === 'abort') out.abortReason = abortReason;
    if (c && c.prompt !== null && (o.newTokenIds.length > 0 || o.finishReason !== null)) {
      out.promptLogprobs = c.prompt;
      c.prompt = null;
    }
    if (c && c.queueTimeMs !== undefined && !c.queueReported) {
      out.queueTimeMs = c.queueTimeMs;
      c.queueReported = true;
    }
    return out;
  }

  #text(c: CompletionText, o: RequestOutput): string {
    if (o.finishReason === 'abort') return '';
    if (o.newTokenIds.length > 0) c.text.push(o.newTokenIds);
    if (o.finishReason === null) {
      const upTo = c.text.text.length - c.holdback;
      if (upTo <= c.sent) return '';
      const delta = c.text.text.slice(c.sent, upTo);
      c.sent = upTo;
      return delta;
    }
    c.text.flush();
    let end = c.text.text.length;
    if (typeof o.stopReason === 'string') {
      const cut = c.includeStop ? o.stopTrimChars - o.stopReason.length : o.stopTrimChars;
      end = Math.max(c.sent, end - Math.max(0, cut));
    }
    const delta = c.text.text.slice(c.sent, end);
    c.sent = end;
    return delta;
  }

  #logprob(tokenId: number, lp: TokenLogprobs): OutputLogprob {
    const ids = lp.topTokenIds ?? [];
    const lps = lp.topLogprobs ?? [];
    return {
      tokenId,
      token: this.#decoder.piece(tokenId),
      logprob: lp.logprob,
      rank: lp.rank ?? 1,
      top: ids.map((id, i) => ({ tokenId: id, token: this.#decoder.piece(id), logprob: lps[i]! })),
    };
  }
}
