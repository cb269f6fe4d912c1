import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Stream } from '@x/core';
import type { Allocator } from '@x/cumem';
import type { ModelConfig } from './config.js';
import { ModelRunner } from './model-runner.js';
import { randomWeights } from './models/random-weights.js';

/** packages/engine/fixtures (tiny checkpoints made by scripts/make_fixtures.py). */
export const FIXTURES = resolve(dirname(fileURLToPath(import.meta.url)), '../fixtures');

/** The model fixtures: one per architecture and config style. */
export const MODEL_FIXTURES = [
  'llama-v4',
  'llama-v5',
  'mistral-v4',
  'mistral-v5',
  'qwen2-v4',
  'qwen2-v5',
  'qwen3-v4',
  'qwen3-v5',
] as const;

/** A fresh temporary directory. */
export function tempDir(prefix = 'x-engine-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A 2-layer Llama (hidden 32, GQA 4/2, vocab 101) for runner tests with random weights. */
export const TINY_LLAMA_CONFIG: ModelConfig = {
  architecture: 'LlamaForCausalLM',
  hiddenSize: 32,
  intermediateSize: 64,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 8,
  vocabSize: 101,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 128,
  tieWordEmbeddings: false,
  attentionBias: false,
  qkNorm: false,
  dtype: 'f32',
  bosTokenId: 1,
  eosTokenIds: [2],
};

/**
 * A ModelRunner over random weights of {@link TINY_LLAMA_CONFIG} on the CPU (its own stream), and
 * how to tear it down.
 */
export async function tinyCpuRunner(
  allocator: Allocator,
  opts: { seed: number; numKvBlocks: number; blockSize: number; maxModelLen?: number },
): Promise<{ runner: ModelRunner; dispose(): Promise<void> }> {
  const config = TINY_LLAMA_CONFIG;
  const weights = await randomWeights(config, { allocator, seed: opts.seed });
  const stream = Stream.create('cpu');
  const runner = await ModelRunner.create({
    config,
    weights,
    allocator,
    stream,
    numKvBlocks: opts.numKvBlocks,
    blockSize: opts.blockSize,
    maxModelLen: opts.maxModelLen ?? 96,
  });
  return {
    runner,
    async dispose() {
      await runner.dispose();
      weights.dispose();
      stream.dispose();
    },
  };
}
