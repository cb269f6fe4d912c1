import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from 'tokenizers';
import { type ChatMessage, ChatTemplate, type ChatTemplateOptions } from './chat-template.js';
import { ModelFileError, TokenizerMismatchError } from './errors.js';
import { asObject, readJson } from './files.js';

export interface LoadTokenizerOptions {
  /** The model's vocab_size: a tokenizer whose ids do not fit the embedding is refused. */
  vocabSize?: number;
}

/**
 * Models pad vocab_size past the tokenizer (Qwen2.5: 151665 tokens, vocab 152064); more padding
 * than this means the tokenizer belongs to another model.
 */
const MAX_VOCAB_PADDING = 1024;

/**
 * A Hugging Face tokenizer: tokenizer.json run by the `tokenizers` package, plus what
 * tokenizer_config.json adds (chat template, bos/eos tokens).
 */
export class Tokenizer {
  /** Number of token ids (vocab plus added tokens). */
  readonly size: number;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  /** Ids of added tokens marked special: skipped when decoding with skipSpecialTokens. */
  readonly specialTokenIds: ReadonlySet<number>;
  /** null when tokenizer_config.json has no chat_template. */
  readonly chatTemplate: ChatTemplate | null;
  readonly #hf: HfTokenizer;

  private constructor(
    hf: HfTokenizer,
    fields: {
      size: number;
      bosToken: string | null;
      eosToken: string | null;
      specialTokenIds: Set<number>;
      chatTemplate: ChatTemplate | null;
    },
  ) {
    this.#hf = hf;
    this.size = fields.size;
    this.bosToken = fields.bosToken;
    this.eosToken = fields.eosToken;
    this.specialTokenIds = fields.specialTokenIds;
    this.chatTemplate = fields.chatTemplate;
    this.bosTokenId = fields.bosToken === null ? null : hf.tokenToId(fields.bosToken);
    this.eosTokenId = fields.eosToken === null ? null : hf.tokenToId(fields.eosToken);
  }

  /** Loads `dir`/tokenizer.json and `dir`/tokenizer_config.json (optional). */
  static async load(dir: string, options: LoadTokenizerOptions = {}): Promise<Tokenizer> {
    const jsonPath = join(dir, 'tokenizer.json');
    let text: string;
    try {
      text = await readFile(jsonPath, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ModelFileError(jsonPath, code === 'ENOENT' ? 'file not found' : String(err), {
        cause: err,
      });
    }
    let hf: HfTokenizer;
    let parsed: { added_tokens?: Array<{ id: number; content: string; special?: boolean }> };
    try {
      hf = HfTokenizer.fromString(text);
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ModelFileError(jsonPath, `not a tokenizer.json (${(err as Error).message})`, {
        cause: err,
      });
    }
    const configPath = join(dir, 'tokenizer_config.json');
    const rawConfig = await readJson(configPath, true);
    const config = rawConfig === null ? {} : asObject(rawConfig, configPath);
    const added = parsed.added_tokens ?? [];
    const size = Math.max(hf.getVocabSize(true), ...added.map((t) => t.id + 1));
    if (options.vocabSize !== undefined) checkVocab(size, options.vocabSize);
    const special: Record<string, string> = {};
    for (const key of [
      'bos_token',
      'eos_token',
      'unk_token',
      'pad_token',
      'sep_token',
      'cls_token',
      'mask_token',
    ]) {
      const t = tokenText(config[key]);
      if (t !== null) special[key] = t;
    }
    return new Tokenizer(hf, {
      size,
      bosToken: special.bos_token ?? null,
      eosToken: special.eos_token ?? null,
      specialTokenIds: new Set(added.filter((t) => t.special).map((t) => t.id)),
      chatTemplate: chatTemplateOf(
        config.chat_template ?? (await readText(join(dir, 'chat_template.jinja'))),
        configPath,
        special,
      ),
    });
  }

  /** Token ids of `text`; with special tokens (e.g. BOS) added as the tokenizer's post-processor says. */
  async encode(text: string, options: { addSpecialTokens?: boolean } = {}): Promise<number[]> {
    const enc = await this.#hf.encode(text, null, {
      addSpecialTokens: options.addSpecialTokens ?? true,
    });
    return enc.getIds();
  }

  /** Text of `ids`; special tokens are skipped unless `skipSpecialTokens` is false. */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): Promise<string> {
    return this.#hf.decode([...ids], options.skipSpecialTokens ?? true);
  }

  /** The token string of one id (null when out of range). */
  idToToken(id: number): string | null {
    return this.#hf.idToToken(id);
  }

  tokenToId(token: string): number | null {
    return this.#hf.tokenToId(token);
  }

  /**
   * The prompt for a conversation, rendered with the model's chat template as transformers'
   * `apply_chat_template(..., tokenize=False)` renders it.
   */
  applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions): string {
    if (this.chatTemplate === null) {
      throw new ModelFileError('tokenizer_config.json', 'has no chat_template; use a plain prompt');
    }
    return this.chatTemplate.render(messages, options);
  }

  /**
   * Token ids of a conversation. The template writes special tokens (BOS) itself, so they are not
   * added again, as in transformers.
   */
  async encodeChat(
    messages: readonly ChatMessage[],
    options?: ChatTemplateOptions,
  ): Promise<number[]> {
    return this.encode(this.applyChatTemplate(messages, options), { addSpecialTokens: false });
  }
}

function checkVocab(size: number, vocabSize: number): void {
  if (size > vocabSize) {
    throw new TokenizerMismatchError(
      size,
      vocabSize,
      `token ids up to ${size - 1} would index past the embedding; is it the tokenizer of another model?`,
    );
  }
  if (vocabSize - size > MAX_VOCAB_PADDING) {
    throw new TokenizerMismatchError(
      size,
      vocabSize,
      `more than ${MAX_VOCAB_PADDING} ids of the model have no token; is it the tokenizer of another model?`,
    );
  }
}

/** tokenizer_config.json writes special tokens as strings or as AddedToken objects. */
function tokenText(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { content?: unknown }).content === 'string'
  ) {
    return (value as { content: string }).content;
  }
  return null;
}

/** Newer checkpoints keep the template in its own file, chat_template.jinja. */
async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return null;
  }
}

function chatTemplateOf(
  value: unknown,
  path: string,
  special: Record<string, string>,
): ChatTemplate | null {
  let source = value;
  // Some tokenizers ship several named templates; "default" is the one for plain chat.
  if (Array.isArray(source)) {
    const named = source as Array<{ name?: string; template?: string }>;
    source = (named.find((t) => t.name === 'default') ?? named[0])?.template;
  }
  if (source === undefined || source === null) return null;
  if (typeof source !== 'string')
    throw new ModelFileError(path, '"chat_template" must be a string');
  try {
    return new ChatTemplate(source, special);
  } catch (err) {
    throw new ModelFileError(path, `chat_template does not parse (${(err as Error).message})`, {
      cause: err,
    });
  }
}
