import { cpSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, Stream } from '@x/core';
import { Allocator } from '@x/cumem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelFileError, TokenizerMismatchError, UnsupportedModelError } from './errors.js';
import {
  DefaultModelMissingError,
  defaultModelDir,
  loadModel,
  resolveModelDir,
} from './load-model.js';
import { ModelRunner } from './model-runner.js';
import { DecoderModel } from './models/decoder.js';
import { architectureSpec } from './models/registry.js';
import { type LoadProgress, progressBar } from './progress.js';
import { FIXTURES, tempDir } from './test-util.js';

let allocator: Allocator;
beforeAll(async () => {
  allocator = await Allocator.create({ device: 'cpu' });
});
afterAll(async () => {
  await allocator.dispose();
});

/** A writable copy of a fixture (symlinked tokenizer files become real files). */
function copyFixture(name: string): string {
  const dir = join(tempDir(), name);
  cpSync(join(FIXTURES, name), dir, { recursive: true, dereference: true });
  return dir;
}

describe('loadModel', () => {
  it('loads config, sampling defaults, tokenizer and weights, and runs them', async () => {
    const dir = join(FIXTURES, 'llama-v4');
    const progress: LoadProgress[] = [];
    const model = await loadModel(dir, { allocator, onProgress: (p) => progress.push(p) });
    const stream = Stream.create('cpu');
    try {
      expect(model.dir).toBe(dir);
      expect(model.config.architecture).toBe('LlamaForCausalLM');
      // A bf16 checkpoint stays bf16 on the device unless asked otherwise.
      expect(model.weights.dtype).toBe('bf16');
      expect(model.generationDefaults).toEqual({ temperature: 0.7, topP: 0.9 });
      expect(model.tokenizer.size).toBe(32000);
      expect(progress.at(-1)).toMatchObject({ done: progress.length, count: progress.length });
      expect(progress.at(-1)!.loadedBytes).toBe(progress.at(-1)!.totalBytes);
      const ids = await model.tokenizer.encode('In the beginning');
      const runner = await ModelRunner.create({
        config: model.config,
        weights: model.weights,
        allocator,
        stream,
        numKvBlocks: 4,
        maxModelLen: 64,
      });
      const { logits } = await runner.execute([
        { tokens: ids, blockTable: [0, 1, 2, 3], contextLength: ids.length },
      ]);
      expect(logits.length).toBe(32000);
      expect(logits.every(Number.isFinite)).toBe(true);
      await runner.dispose();
    } finally {
      model.dispose();
      stream.dispose();
    }
  });

  it('widens an f16 checkpoint to f32 and honours an explicit dtype', async () => {
    const q3 = await loadModel(join(FIXTURES, 'qwen3-v4'), { allocator, onProgress: () => {} });
    expect(q3.config.dtype).toBe('f16');
    expect(q3.weights.dtype).toBe('f32');
    q3.dispose();
    const l = await loadModel(join(FIXTURES, 'llama-v4'), {
      allocator,
      dtype: 'f32',
      device: 'cpu',
      onProgress: () => {},
    });
    expect(l.weights.dtype).toBe('f32');
    l.dispose();
  });

  it('loads only the slices of a tensor-parallel rank', async () => {
    const m = await loadModel(join(FIXTURES, 'llama-v4'), {
      allocator,
      tp: { rank: 1, size: 2 },
      onProgress: () => {},
    });
    expect(m.weights.get('model.layers.0.self_attn.q_proj.weight').shape).toEqual([16, 8]);
    expect(m.weights.get('model.layers.0.mlp.down_proj.weight').shape).toEqual([8, 12]);
    m.dispose();
  });

  it('fails with an error a user can act on, before reading any weight', async () => {
    const before = allocator.audit().length;
    // Missing file: names the path.
    const noConfig = copyFixture('llama-v5');
    rmSync(join(noConfig, 'config.json'));
    await expect(loadModel(noConfig, { allocator })).rejects.toThrow(
      new ModelFileError(join(noConfig, 'config.json'), 'file not found'),
    );
    // Unknown architecture: lists the supported ones.
    const gpt2 = copyFixture('llama-v5');
    const cfg = JSON.parse(readFileSync(join(gpt2, 'config.json'), 'utf8'));
    writeFileSync(
      join(gpt2, 'config.json'),
      JSON.stringify({ ...cfg, architectures: ['GPT2LMHeadModel'] }),
    );
    const err = await loadModel(gpt2, { allocator }).catch((e) => e);
    expect(err).toBeInstanceOf(UnsupportedModelError);
    expect(err.message).toMatch(/GPT2LMHeadModel.*supported: LlamaForCausalLM, MistralForCausalLM/);
    // A tokenizer of another model: vocab_size far from the tokenizer's size.
    const small = copyFixture('llama-v5');
    writeFileSync(join(small, 'config.json'), JSON.stringify({ ...cfg, vocab_size: 1000 }));
    await expect(loadModel(small, { allocator })).rejects.toBeInstanceOf(TokenizerMismatchError);
    // No weights: says which files it looked for.
    const noWeights = copyFixture('mistral-v4');
    rmSync(join(noWeights, 'model.safetensors'));
    await expect(loadModel(noWeights, { allocator })).rejects.toThrow(
      /expected model.safetensors or model.safetensors.index.json/,
    );
    expect(allocator.audit().length).toBe(before);
  });

  it('runs q/k/v and gate/up as one matmul each (the loader stores them back to back)', async () => {
    for (const [name, fusedQkv] of [
      ['mistral-v4', true],
      ['qwen2-v5', true], // with the q/k/v biases fused too
      ['qwen3-v5', false], // per-head q/k norm needs q and k contiguous: separate q/k/v
    ] as const) {
      const m = await loadModel(join(FIXTURES, name), { allocator, onProgress: () => {} });
      const stream = Stream.create('cpu', { recordOps: true });
      const runner = await ModelRunner.create({
        config: m.config,
        weights: m.weights,
        allocator,
        stream,
        numKvBlocks: 2,
        maxModelLen: 32,
      });
      // allLogits runs the kernels one by one (no graph), so the op log shows each matmul.
      await runner.execute([{ tokens: [1, 2, 3], blockTable: [0, 1], contextLength: 3 }], {
        allLogits: true,
      });
      const perLayer = (fusedQkv ? 1 : 3) + 1 + 1 + 1; // qkv, o, gate_up, down
      const matmuls = stream.completedOps().filter((op) => op === 'kernels.matmul').length;
      expect([name, matmuls]).toEqual([name, m.config.numLayers * perLayer + 2]); // + lm_head ×2
      await runner.dispose();
      stream.dispose();
      m.dispose();
    }
  });

  it('counts the weight bytes a decode step streams (lm_head always, the embedding gather never)', async () => {
    for (const name of ['llama-v4', 'llama-v5']) {
      const m = await loadModel(join(FIXTURES, name), { allocator, onProgress: () => {} });
      const decoder = new DecoderModel(
        architectureSpec(m.config.architecture),
        m.config,
        m.weights,
      );
      const embed = m.weights.get('model.embed_tokens.weight').byteLength;
      // Tied (llama-v5): the one table is streamed as lm_head. Untied (llama-v4): lm_head is its
      // own tensor and the embedding is only gathered.
      const want = m.config.tieWordEmbeddings ? m.weights.bytes : m.weights.bytes - embed;
      expect([name, decoder.weightBytes()]).toEqual([name, want]);
      m.dispose();
    }
  });

  it('checks its arguments', async () => {
    await expect(loadModel('', { allocator })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(
      loadModel(join(FIXTURES, 'llama-v4'), { allocator: {} as Allocator }),
    ).rejects.toThrow(/Expected an @x\/cumem Allocator for options.allocator/);
    await expect(
      loadModel(join(FIXTURES, 'llama-v4'), { allocator, device: 'cuda:0' }),
    ).rejects.toThrow(/Expected the allocator's device \(cpu\) for options.device/);
  });
});

describe('resolveModelDir', () => {
  it('makes a given directory absolute', () => {
    expect(resolveModelDir('fixtures/llama-v4')).toBe(join(process.cwd(), 'fixtures/llama-v4'));
  });

  it('resolves the built-in default model, or says it is missing and how to build it', () => {
    const dir = defaultModelDir();
    expect(dir).toMatch(/packages[/\\]engine[/\\]models[/\\]default$/);
    const present = ['config.json', 'tokenizer.json', 'model.safetensors'].every((f) =>
      existsSync(join(dir, f)),
    );
    if (present) {
      expect(resolveModelDir()).toBe(dir);
    } else {
      const err = (() => {
        try {
          resolveModelDir();
        } catch (e) {
          return e as Error;
        }
      })();
      expect(err).toBeInstanceOf(DefaultModelMissingError);
      expect(err).toBeInstanceOf(ModelFileError);
      expect(err?.message).toContain('built-in default model is not present');
      expect(err?.message).toContain('--model DIR');
      expect(err?.message).toContain('docs/default-model.md');
    }
  });
});

describe('progressBar', () => {
  it('redraws one line in place and finishes it at the end', () => {
    const out: string[] = [];
    const bar = progressBar({ write: (s: string) => out.push(s), columns: 100 }, 'Loading', 0);
    const total = 3 << 20;
    bar({ tensor: 'a', done: 1, count: 3, loadedBytes: 1 << 20, totalBytes: total });
    bar({ tensor: 'b', done: 2, count: 3, loadedBytes: 2 << 20, totalBytes: total });
    bar({ tensor: 'c', done: 3, count: 3, loadedBytes: total, totalBytes: total });
    expect(out).toHaveLength(3);
    expect(out.every((s) => s.startsWith('\r'))).toBe(true);
    expect(out[0]).toMatch(/Loading \[#+-+\] {2}33% 1\.0 MB\/3\.0 MB 1\/3 tensors/);
    expect(out[2]).toMatch(/\[#+\] 100% 3\.0 MB\/3\.0 MB 3\/3 tensors [\d.]+s\n$/);
    expect(out.slice(0, 2).every((s) => !s.includes('\n'))).toBe(true);
  });

  it('draws at most once per interval but always the last update', () => {
    const out: string[] = [];
    const bar = progressBar({ write: (s: string) => out.push(s) }, 'Loading', 60_000);
    for (let i = 1; i <= 50; i++) {
      bar({ tensor: `t${i}`, done: i, count: 50, loadedBytes: i, totalBytes: 50 });
    }
    expect(out).toHaveLength(2);
    expect(out[1]).toContain('50/50 tensors');
  });
});
