import { AsleepError, InvalidArgumentError, Stream } from '@x/core';
import { Allocator } from '@x/cumem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelConfig } from './config.js';
import { ModelRunner, type SequenceStep } from './model-runner.js';
import { randomWeights } from './models/random-weights.js';

const base: ModelConfig = {
  architecture: 'LlamaForCausalLM',
  hiddenSize: 48,
  intermediateSize: 72,
  numLayers: 2,
  numHeads: 6,
  numKvHeads: 2,
  headDim: 8,
  vocabSize: 97,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 256,
  tieWordEmbeddings: false,
  attentionBias: false,
  qkNorm: false,
  dtype: 'f32',
  bosTokenId: 1,
  eosTokenIds: [2],
};

const variants: Array<[string, Partial<ModelConfig>, 'f32' | 'bf16']> = [
  [
    'Llama GQA 3, llama3 rope scaling',
    {
      ropeScaling: {
        type: 'llama3',
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 64,
      },
    },
    'f32',
  ],
  ['Llama with attention bias, bf16 weights', { attentionBias: true, numKvHeads: 6 }, 'bf16'],
  ['Mistral MQA', { architecture: 'MistralForCausalLM', numKvHeads: 1 }, 'f32'],
  ['Qwen2 (qkv bias)', { architecture: 'Qwen2ForCausalLM', ropeTheta: 1e6 }, 'f32'],
  [
    'Qwen3 (q/k norm, headDim 16 ≠ hidden / heads)',
    { architecture: 'Qwen3ForCausalLM', qkNorm: true, headDim: 16, numHeads: 4 },
    'bf16',
  ],
];

const prompt = Array.from({ length: 37 }, (_, i) => (i * 31 + 7) % 97);

function maxRelErr(a: Float32Array, b: Float32Array): number {
  let scale = 0;
  let err = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]!));
    err = Math.max(err, Math.abs(a[i]! - b[i]!));
  }
  if (a.some(Number.isNaN)) return Number.POSITIVE_INFINITY;
  return err / scale;
}

let allocator: Allocator;
beforeAll(async () => {
  allocator = await Allocator.create({ device: 'cpu' });
});
afterAll(async () => {
  await allocator.dispose();
});

describe.each(variants)('ModelRunner: %s', (_name, overrides, dtype) => {
  const config = { ...base, ...overrides } as ModelConfig;

  async function setup(blockSize: number) {
    const weights = await randomWeights(config, { allocator, seed: 3, dtype });
    const stream = Stream.create('cpu', { recordOps: true });
    const runner = await ModelRunner.create({
      config,
      weights,
      allocator,
      stream,
      numKvBlocks: 32,
      blockSize,
      maxModelLen: 128,
    });
    return {
      runner,
      stream,
      async dispose() {
        await runner.dispose();
        weights.dispose();
        stream.dispose();
      },
    };
  }

  it('chunked prefill and paged decode give the logits of one full pass', async () => {
    const full = await setup(16);
    const blocksA = [5, 2, 9]; // scrambled on purpose
    const { allLogits } = await full.runner.execute(
      [{ tokens: prompt, blockTable: blocksA, contextLength: prompt.length }],
      { allLogits: true },
    );
    const v = config.vocabSize;
    expect(full.stream.completedOps()).toEqual(
      expect.arrayContaining(['kernels.pagedAttention', 'kernels.matmul']),
    );
    await full.dispose();

    // Same prompt in chunks of 10, 7, 1, 1, ... through another cache layout and block size.
    const paged = await setup(4);
    const table = Array.from({ length: 10 }, (_, i) => 31 - 3 * i);
    const chunks = [10, 7, 1, 1, 5, 13];
    let done = 0;
    for (const n of chunks) {
      const step: SequenceStep = {
        tokens: prompt.slice(done, done + n),
        blockTable: table,
        contextLength: done + n,
      };
      const { logits } = await paged.runner.execute([step]);
      done += n;
      const want = allLogits!.subarray((done - 1) * v, done * v);
      expect(maxRelErr(logits, want)).toBeLessThan(1e-5);
    }
    // On CPU each step is one captured graph (the two 1-token steps replay the same one, at a new
    // position), while the allLogits pass above ran its kernels one by one.
    const ops = paged.stream.completedOps();
    expect(ops.filter((op) => op === 'kernels.graph')).toHaveLength(chunks.length);
    expect(ops).not.toContain('kernels.matmul');
    await paged.dispose();
  });

  it('a mixed batch (prefill chunks beside decode tokens) equals each sequence alone', async () => {
    const r = await setup(16);
    const v = config.vocabSize;
    const other = prompt.slice(3, 23).reverse();
    // Alone: sequence A prefill 20 then decode 1; sequence B prefill 9 then chunk of 11.
    const a1 = await r.runner.execute([
      { tokens: prompt.slice(0, 20), blockTable: [0, 1], contextLength: 20 },
    ]);
    const a2 = await r.runner.execute([
      { tokens: [prompt[20]!], blockTable: [0, 1], contextLength: 21 },
    ]);
    const b1 = await r.runner.execute([
      { tokens: other.slice(0, 9), blockTable: [4, 3], contextLength: 9 },
    ]);
    const b2 = await r.runner.execute([
      { tokens: other.slice(9), blockTable: [4, 3], contextLength: 20 },
    ]);
    // Together: A's prefill with B's first chunk, then A's decode with B's second chunk.
    const m1 = await r.runner.execute([
      { tokens: prompt.slice(0, 20), blockTable: [10, 11], contextLength: 20 },
      { tokens: other.slice(0, 9), blockTable: [12, 13], contextLength: 9 },
    ]);
    const m2 = await r.runner.execute([
      { tokens: other.slice(9), blockTable: [12, 13], contextLength: 20 },
      { tokens: [prompt[20]!], blockTable: [10, 11], contextLength: 21 },
    ]);
    expect(maxRelErr(m1.logits.subarray(0, v), a1.logits)).toBeLessThan(1e-5);
    expect(maxRelErr(m1.logits.subarray(v), b1.logits)).toBeLessThan(1e-5);
    expect(maxRelErr(m2.logits.subarray(0, v), b2.logits)).toBeLessThan(1e-5);
    expect(maxRelErr(m2.logits.subarray(v), a2.logits)).toBeLessThan(1e-5);
    await r.dispose();
  });
});

describe('ModelRunner errors', () => {
  it('names the bad field of a batch and refuses to run while a tag sleeps', async () => {
    const weights = await randomWeights(base, { allocator, seed: 1 });
    const stream = Stream.create('cpu');
    const runner = await ModelRunner.create({
      config: base,
      weights,
      allocator,
      stream,
      numKvBlocks: 4,
      maxModelLen: 64,
    });
    await expect(
      runner.execute([{ tokens: [1, 500], blockTable: [0], contextLength: 2 }]),
    ).rejects.toThrow(
      /Expected a token id in \[0, 97\) for batch\[0\]\.tokens\[1\] but received 500/,
    );
    await expect(
      runner.execute([{ tokens: [1, 2], blockTable: [], contextLength: 2 }]),
    ).rejects.toThrow(InvalidArgumentError);
    await expect(
      runner.execute([{ tokens: [1], blockTable: [7], contextLength: 1 }]),
    ).rejects.toThrow(/blockTable\[0\]/);
    await allocator.sleep({ tags: ['kv_cache'] });
    await expect(
      runner.execute([{ tokens: [1], blockTable: [0], contextLength: 1 }]),
    ).rejects.toThrow(AsleepError);
    await allocator.wake({ tags: ['kv_cache'] });
    const ok = await runner.execute([{ tokens: [1], blockTable: [0], contextLength: 1 }]);
    expect(ok.logits.length).toBe(97);
    expect(ok.logits.every(Number.isFinite)).toBe(true);
    await runner.dispose();
    weights.dispose();
    stream.dispose();
  });

  it('rejects an unknown architecture listing the supported ones', async () => {
    const config = { ...base, architecture: 'GPT2LMHeadModel' } as unknown as ModelConfig;
    await expect(randomWeights(config, { allocator })).rejects.toThrow(
      /supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM/,
    );
  });
});
