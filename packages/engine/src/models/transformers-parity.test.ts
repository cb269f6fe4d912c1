// Logits and greedy continuations against Hugging Face transformers, over every fixture under
// packages/engine/fixtures/*/ that has an expected.json (made by scripts/make_fixtures.py):
//   {"prompt_ids": number[], "last_logits": number[], "greedy_ids": number[], "config_style": "v4"|"v5", ...}
// fp32 compute; logits within 1e-4 relative error (max |Δ| / max |expected|); greedy ids identical.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Stream } from '@x/core';
import { Allocator } from '@x/cumem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig } from '../config.js';
import { ModelRunner } from '../model-runner.js';
import { FIXTURES } from '../test-util.js';
import { loadWeights } from '../weights.js';

interface Expected {
  prompt_ids: number[];
  last_logits: number[];
  greedy_ids: number[];
  config_style: 'v4' | 'v5';
  storage_dtype?: string;
}

const fixtures = readdirSync(FIXTURES, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(FIXTURES, d.name, 'expected.json')))
  .map((d) => d.name)
  .sort();

function relErr(got: ArrayLike<number>, want: readonly number[]): number {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    err = Number.isNaN(d) ? Number.POSITIVE_INFINITY : Math.max(err, d);
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return err / scale;
}

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

let allocator: Allocator;
beforeAll(async () => {
  allocator = await Allocator.create({ device: 'cpu' });
});
afterAll(async () => {
  await allocator.dispose();
});

it('finds model fixtures of every architecture in both config styles', () => {
  const seen = fixtures.map((f) => {
    const e = JSON.parse(readFileSync(join(FIXTURES, f, 'expected.json'), 'utf8')) as Expected;
    const arch = JSON.parse(readFileSync(join(FIXTURES, f, 'config.json'), 'utf8'))
      .architectures[0];
    return `${arch}/${e.config_style}`;
  });
  for (const arch of [
    'LlamaForCausalLM',
    'MistralForCausalLM',
    'Qwen2ForCausalLM',
    'Qwen3ForCausalLM',
  ]) {
    expect(seen).toContain(`${arch}/v4`);
    expect(seen).toContain(`${arch}/v5`);
  }
});

describe.each(fixtures)('transformers parity: %s', (name) => {
  const dir = join(FIXTURES, name);
  const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Expected;
  const dtypes: Array<'f32' | 'bf16'> =
    expected.storage_dtype === 'bfloat16' ? ['f32', 'bf16'] : ['f32'];

  it.each(dtypes)(
    'prompt logits and a greedy continuation match (weights held as %s)',
    async (dtype) => {
      const config = await loadModelConfig(dir);
      const weights = await loadWeights(dir, config, { allocator, dtype, onProgress: () => {} });
      const stream = Stream.create('cpu');
      const runner = await ModelRunner.create({
        config,
        weights,
        allocator,
        stream,
        numKvBlocks: 16,
        blockSize: 16,
        maxModelLen: 256,
      });
      try {
        const blockTable = Array.from({ length: 16 }, (_, i) => 15 - i);
        const prompt = expected.prompt_ids;
        let { logits } = await runner.execute([
          { tokens: prompt, blockTable, contextLength: prompt.length },
        ]);
        expect(relErr(logits, expected.last_logits)).toBeLessThan(1e-4);
        const generated: number[] = [];
        let len = prompt.length;
        while (generated.length < expected.greedy_ids.length) {
          const next = argmax(logits);
          generated.push(next);
          len++;
          ({ logits } = await runner.execute([{ tokens: [next], blockTable, contextLength: len }]));
        }
        expect(generated.length).toBeGreaterThanOrEqual(24);
        expect(generated).toEqual(expected.greedy_ids);
      } finally {
        await runner.dispose();
        weights.dispose();
        stream.dispose();
      }
    },
  );
});
