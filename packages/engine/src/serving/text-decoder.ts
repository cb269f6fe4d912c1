import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from 'tokenizers';
import { ModelFileError } from '../errors.js';
import type { Tokenizer } from '../tokenizer.js';

/** How many prompt tokens give the first decoded output token its context (vLLM uses 5 too). */
const INITIAL_CONTEXT_TOKENS = 5;

/**
 * Synchronous decoding of token ids for the engine-core thread: the tokenizer's own decoder
 * pipeline (ByteLevel, SentencePiece replace/byte-fallback/strip, …) run on the ids' token
 * strings, which is what Hugging Face `decode` does, without an async round trip through the
 * thread pool per call. Stop strings, incremental text and log-probability tokens all decode
 * through here, so their text agrees.
 */
export class TextDecoder {
  readonly #hf: HfTokenizer;
  readonly #decoder: ReturnType<HfTokenizer['getDecoder']>;
  readonly #special: ReadonlySet<number>;
  readonly #pieces = new Map<number, string>();

  private constructor(hf: HfTokenizer, special: ReadonlySet<number>) {
    this.#hf = hf;
    this.#decoder = hf.getDecoder();
    this.#special = special;
  }

  /** Opens `dir`/tokenizer.json; `tokenizer` supplies which ids are special. */
  static load(dir: string, tokenizer: Tokenizer): TextDecoder {
    const path = join(dir, 'tokenizer.json');
    let hf: HfTokenizer;
    try {
      hf = HfTokenizer.fromFile(path);
    } catch (err) {
      throw new ModelFileError(path, `not a tokenizer.json (${(err as Error).message})`, {
        cause: err,
      });
    }
    return new TextDecoder(hf, tokenizer.specialTokenIds);
  }

  /** Text of `ids`; special tokens are left out unless `skipSpecialTokens` is false. */
  decode(ids: readonly number[], skipSpecialTokens = true): string {
    const tokens: string[] = [];
    for (const id of ids) {
      if (skipSpecialTokens && this.#special.has(id)) continue;
      const t = this.#hf.idToToken(id);
      if (t !== null) tokens.push(t);
    }
    if (tokens.length === 0) return '';
    return this.#decoder === null ? tokens.join(' ') : this.#decoder.decode(tokens);
  }

  /** One token's text, as log-probabilities show it (special tokens included; cached). */
  piece(id: number): string {
    let s = this.#pieces.get(id);
    if (s === undefined) {
      s = this.decode([id], false);
      this.#pieces.set(id, s);
    }
    return s;
  }
}

/**
 * Text deltas of a growing token list that never split a character: vLLM's incremental
 * detokenization with prefix/read offsets (see IncrementalDetokenizer for the async twin).
 */
export class IncrementalText {
  readonly #decoder: TextDecoder;
  readonly #skipSpecial: boolean;
  readonly #ids: number[];
  #prefixOffset: number;
  #readOffset: number;
  #text = '';

  constructor(decoder: TextDecoder, promptIds: readonly number[], skipSpecialTokens = true) {
    this.#decoder = decoder;
    this.#skipSpecial = skipSpecialTokens;
    this.#ids = [...promptIds.slice(-INITIAL_CONTEXT_TOKENS - 1)];
    this.#readOffset = this.#ids.length;
    this.#prefixOffset = Math.max(0, this.#ids.length - INITIAL_CONTEXT_TOKENS);
  }

  /** All text emitted so far. */
  get text(): string {
    return this.#text;
  }

  /** Appends tokens; returns the text they complete ('' while a character is still partial). */
  push(ids: readonly number[]): string {
    for (const id of ids) this.#ids.push(id);
    const prefix = this.#decoder.decode(
      this.#ids.slice(this.#prefixOffset, this.#readOffset),
      this.#skipSpecial,
    );
    const full = this.#decoder.decode(this.#ids.slice(this.#prefixOffset), this.#skipSpecial);
    if (full.length <= prefix.length || full.endsWith('\uFFFD')) return '';
    return this.#advance(full.slice(prefix.length));
  }

  /** Emits what is still held back (a trailing partial character is final at the end). */
  flush(): string {
    const prefix = this.#decoder.decode(
      this.#ids.slice(this.#prefixOffset, this.#readOffset),
      this.#skipSpecial,
    );
    const full = this.#decoder.decode(this.#ids.slice(this.#prefixOffset), this.#skipSpecial);
    return this.#advance(full.length > prefix.length ? full.slice(prefix.length) : '');
  }

  #advance(delta: string): string {
    this.#prefixOffset = this.#readOffset;
    this.#readOffset = this.#ids.length;
    // Only the window [prefixOffset, end) is ever decoded again: drop what lies before it.
    if (this.#prefixOffset > 64) {
      this.#ids.splice(0, this.#prefixOffset);
      this.#readOffset -= this.#prefixOffset;
      this.#prefixOffset = 0;
    }
    this.#text += delta;
    return delta;
  }
}
