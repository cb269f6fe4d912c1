import type { Tokenizer } from './tokenizer.js';

/** How many prompt tokens give the first decoded token its context (vLLM uses 5 too). */
const INITIAL_CONTEXT_TOKENS = 5;

export interface DetokenizerOptions {
  skipSpecialTokens?: boolean;
}

/**
 * Turns a growing list of token ids into text deltas that never split a character: vLLM's
 * incremental detokenization with prefix/read offsets. Each step decodes the window
 * [prefixOffset, end) and [prefixOffset, readOffset); the difference is new text unless it ends in
 * U+FFFD, which means an incomplete UTF-8 sequence (a multi-byte character split across
 * byte-level or byte-fallback tokens) that the next tokens will complete. Decoding a window with
 * some context before it keeps tokenizer-specific spacing (SentencePiece's leading "▁") right.
 */
export class IncrementalDetokenizer {
  readonly #tokenizer: Tokenizer;
  readonly #skipSpecial: boolean;
  readonly #ids: number[];
  #prefixOffset: number;
  #readOffset: number;
  #text = '';

  /** `promptIds` give the context; only tokens pushed later produce text. */
  constructor(
    tokenizer: Tokenizer,
    promptIds: readonly number[] = [],
    options: DetokenizerOptions = {},
  ) {
    this.#tokenizer = tokenizer;
    this.#skipSpecial = options.skipSpecialTokens ?? true;
    this.#ids = [...promptIds];
    this.#readOffset = promptIds.length;
    this.#prefixOffset = Math.max(0, promptIds.length - INITIAL_CONTEXT_TOKENS);
  }

  /** All text emitted so far. */
  get text(): string {
    return this.#text;
  }

  /** Appends tokens; resolves to the text they complete ('' while a character is still partial). */
  async push(ids: readonly number[]): Promise<string> {
    this.#ids.push(...ids);
    const opts = { skipSpecialTokens: this.#skipSpecial };
    const prefix = await this.#tokenizer.decode(
      this.#ids.slice(this.#prefixOffset, this.#readOffset),
      opts,
    );
    const full = await this.#tokenizer.decode(this.#ids.slice(this.#prefixOffset), opts);
    if (full.length <= prefix.length || full.endsWith('\uFFFD')) return '';
    const delta = full.slice(prefix.length);
    this.#prefixOffset = this.#readOffset;
    this.#readOffset = this.#ids.length;
    this.#text += delta;
    return delta;
  }

  /**
   * Emits whatever is still held back (at the end of a sequence a trailing partial character is
   * final, and shows as U+FFFD as in a full decode).
   */
  async flush(): Promise<string> {
    const opts = { skipSpecialTokens: this.#skipSpecial };
    const prefix = await this.#tokenizer.decode(
      this.#ids.slice(this.#prefixOffset, this.#readOffset),
      opts,
    );
    const full = await this.#tokenizer.decode(this.#ids.slice(this.#prefixOffset), opts);
    this.#prefixOffset = this.#readOffset;
    this.#readOffset = this.#ids.length;
    const delta = full.length > prefix.length ? full.slice(prefix.length) : '';
    this.#text += delta;
    return delta;
  }
}
