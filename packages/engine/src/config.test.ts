import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { XError } from '@x/core';
import { describe, expect, it } from 'vitest';
import { loadGenerationDefaults, loadModelConfig, parseModelConfig } from './config.js';
import { ModelFileError, UnsupportedModelError } from './errors.js';
import { FIXTURES, tempDir } from './test-util.js';

const base = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  num_key_value_heads: 2,
  vocab_size: 1000,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 4096,
};

describe('loadModelConfig', () => {
  it('reads a transformers-4 style config with llama3 rope scaling', async () => {
    const c = await loadModelConfig(join(FIXTURES, 'llama-v4'));
    expect(c).toEqual({
      architecture: 'LlamaForCausalLM',
      hiddenSize: 8,
      intermediateSize: 24,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 8,
      vocabSize: 32000,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeScaling: {
        type: 'llama3',
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 512,
      },
      maxPositionEmbeddings: 4096,
      tieWordEmbeddings: false,
      attentionBias: false,
      qkNorm: false,
      dtype: 'bf16',
      bosTokenId: 1,
      eosTokenIds: [2],
    });
  });

  it('reads a transformers-5 style config (rope_parameters, dtype)', async () => {
    const c = await loadModelConfig(join(FIXTURES, 'llama-v5'));
    expect(c.ropeTheta).toBe(10000);
    expect(c.ropeScaling).toBeNull();
    expect(c.dtype).toBe('f32');
    expect(c.numKvHeads).toBe(1);
    expect(c.tieWordEmbeddings).toBe(true);
  });

  it('gives the same config for both styles of one model', () => {
    const v4 = parseModelConfig(
      {
        ...base,
        rope_theta: 500000,
        rope_scaling: {
          type: 'llama3',
          factor: 32,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 8192,
        },
        torch_dtype: 'bfloat16',
      },
      {},
    );
    const v5 = parseModelConfig(
      {
        ...base,
        rope_parameters: {
          rope_type: 'llama3',
          rope_theta: 500000,
          factor: 32,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 8192,
        },
        dtype: 'bfloat16',
      },
      {},
    );
    expect(v5).toEqual(v4);
    expect(v4.ropeScaling?.factor).toBe(32);
  });

  it('knows each architecture: Qwen2 biases, Qwen3 q/k norm and free head_dim', async () => {
    const q2 = await loadModelConfig(join(FIXTURES, 'qwen2-v4'));
    expect([q2.architecture, q2.attentionBias, q2.qkNorm, q2.headDim]).toEqual([
      'Qwen2ForCausalLM',
      true,
      false,
      4,
    ]);
    const q3 = await loadModelConfig(join(FIXTURES, 'qwen3-v4'));
    expect([q3.architecture, q3.attentionBias, q3.qkNorm, q3.headDim, q3.hiddenSize]).toEqual([
      'Qwen3ForCausalLM',
      false,
      true,
      16,
      8,
    ]);
    expect(q3.dtype).toBe('f16');
    const m = await loadModelConfig(join(FIXTURES, 'mistral-v5'));
    expect([m.architecture, m.numKvHeads, m.ropeTheta]).toEqual(['MistralForCausalLM', 1, 10000]);
  });

  it('merges eos ids from config.json and generation_config.json', () => {
    const c = parseModelConfig({ ...base, eos_token_id: 2 }, { eos_token_id: [2, 7, 9] });
    expect(c.eosTokenIds).toEqual([2, 7, 9]);
    expect(c.bosTokenId).toBeNull();
    expect(c.headDim).toBe(8);
  });

  it('lists the supported architectures for an unknown one', () => {
    const err = catchError(() =>
      parseModelConfig({ ...base, architectures: ['GPT2LMHeadModel'] }, {}),
    );
    expect(err).toBeInstanceOf(UnsupportedModelError);
    expect(err).toBeInstanceOf(XError);
    expect(err.message).toContain('GPT2LMHeadModel');
    expect(err.message).toContain(
      'LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM',
    );
  });

  it('refuses rope scaling it does not implement', () => {
    const err = catchError(() =>
      parseModelConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }, {}),
    );
    expect(err).toBeInstanceOf(UnsupportedModelError);
    expect(err.message).toContain('"yarn"');
  });

  it('names the missing file', async () => {
    const dir = tempDir();
    await expect(loadModelConfig(dir)).rejects.toThrow(ModelFileError);
    await expect(loadModelConfig(dir)).rejects.toThrow(join(dir, 'config.json'));
    await expect(loadModelConfig(dir)).rejects.toThrow('file not found');
  });

  it('names the bad key', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, hidden_size: '64' }));
    await expect(loadModelConfig(dir)).rejects.toThrow('"hidden_size" must be a number');
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, num_key_value_heads: 3 }));
    await expect(loadModelConfig(dir)).rejects.toThrow('must be a multiple of num_key_value_heads');
    writeFileSync(join(dir, 'config.json'), '{"architectures": [');
    await expect(loadModelConfig(dir)).rejects.toThrow('invalid JSON');
  });
});

describe('loadGenerationDefaults', () => {
  it('reads sampling defaults', async () => {
    expect(await loadGenerationDefaults(join(FIXTURES, 'llama-v4'))).toEqual({
      temperature: 0.7,
      topP: 0.9,
    });
  });

  it('is greedy when do_sample is false, and empty without the file', async () => {
    const dir = tempDir();
    expect(await loadGenerationDefaults(dir)).toEqual({});
    writeFileSync(
      join(dir, 'generation_config.json'),
      JSON.stringify({ do_sample: false, temperature: 0.6, top_k: 20, max_new_tokens: 64 }),
    );
    expect(await loadGenerationDefaults(dir)).toEqual({
      temperature: 0,
      topK: 20,
      maxNewTokens: 64,
    });
  });
});

function catchError(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}
