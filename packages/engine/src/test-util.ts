import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ModelConfig } from './config.js';

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
