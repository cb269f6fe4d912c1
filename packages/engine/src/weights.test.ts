import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Allocator } from '@x/cumem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig, type ModelConfig, parseModelConfig } from './config.js';
import { WeightShapeError } from './errors.js';
import type { LoadProgress } from './progress.js';
import type { SafetensorsDType } from './safetensors.js';
import { type TensorToWrite, writeSafetensors } from './safetensors-writer.js';
import { FIXTURES, MODEL_FIXTURES, tempDir } from './test-util.js';
import { weightSpecs } from './weight-specs.js';
import { loadWeights } from './weights.js';

let allocator: Allocator;
beforeAll(async () => {
  allocator = await Allocator.create({ device: 'cpu' });
});
afterAll(async () => {
  await allocator.dispose();
});

/** Qwen2 (q/k/v biases), 2 heads sharing 1 KV head, tied embeddings. */
const tiny: ModelConfig = parseModelConfig(
  {
    architectures: ['Qwen2ForCausalLM'],
    hidden_size: 4,
    intermediate_size: 6,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    vocab_size: 10,
    tie_word_embeddings: true,
  },
  {},
);

/** Distinct small integers per tensor: exact in f32, f16 and bf16. */
function values(name: string, n: number): number[] {
  let seed = 0;
  for (const c of name) seed = (seed * 31 + c.charCodeAt(0)) % 997;
  return Array.from({ length: n }, (_, i) => ((seed + i * 7) % 200) - 100);
}

function checkpoint(config: ModelConfig, dtype: SafetensorsDType): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  for (const s of weightSpecs(config)) {
    out[s.name] = {
      dtype,
      shape: s.shape,
      values: values(
        s.name,
        s.shape.reduce((a, b) => a * b, 1),
      ),
    };
  }
  return out;
}

async function asNumbers(bytes: Uint8Array, dtype: 'f32' | 'bf16'): Promise<number[]> {
  const copy = bytes.slice();
  if (dtype === 'f32') return [...new Float32Array(copy.buffer)];
  const u16 = new Uint16Array(copy.buffer);
  return [
    ...Float32Array.from(u16, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]!),
  ];
}

describe('loadWeights', () => {
  for (const src of ['F32', 'F16', 'BF16'] as const) {
    for (const dst of ['f32', 'bf16'] as const) {
      it(`loads ${src} into ${dst}`, async () => {
        const dir = tempDir();
        writeSafetensors(join(dir, 'model.safetensors'), checkpoint(tiny, src));
        const store = await loadWeights(dir, tiny, { allocator, dtype: dst, onProgress: () => {} });
        try {
          for (const s of weightSpecs(tiny)) {
            const t = store.get(s.name);
            expect(t.shape).toEqual(s.shape);
            expect(t.dtype).toBe(dst);
            expect(await asNumbers(await store.readBytes(s.name), dst)).toEqual(
              values(s.name, t.numel),
            );
          }
          // Tied: lm_head is the embedding itself, not a copy.
          expect(store.get('lm_head.weight').ptr).toBe(store.get('model.embed_tokens.weight').ptr);
          expect(store.names()).toContain('lm_head.weight');
        } finally {
          store.dispose();
        }
      });
    }
  }

  it('loads a sharded checkpoint through model.safetensors.index.json', async () => {
    const dir = tempDir();
    const all = checkpoint(tiny, 'BF16');
    const names = Object.keys(all);
    const shards = [names.filter((_, i) => i % 2 === 0), names.filter((_, i) => i % 2 === 1)];
    const weightMap: Record<string, string> = {};
    shards.forEach((part, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(join(dir, file), Object.fromEntries(part.map((n) => [n, all[n]!])));
      for (const n of part) weightMap[n] = file;
    });
    writeFileSync(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    const progress: LoadProgress[] = [];
    const store = await loadWeights(dir, tiny, {
      allocator,
      dtype: 'f32',
      onProgress: (p) => progress.push(p),
    });
    const name = 'model.layers.0.mlp.down_proj.weight';
    expect(await asNumbers(await store.readBytes(name), 'f32')).toEqual(values(name, 24));
    expect(progress.at(-1)).toMatchObject({ done: names.length, count: names.length });
    expect(progress.at(-1)!.loadedBytes).toBe(progress.at(-1)!.totalBytes);
    // Every tensor landed under the weights tag, owned by its HF name; q/k/v and gate/up share
    // one allocation per layer (owned by the fused name), back to back, so they run as one matmul.
    const owners = allocator
      .audit()
      .filter((e) => e.tag === 'weights')
      .map((e) => e.owner);
    const fused = /\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\./;
    expect(owners).toEqual(expect.arrayContaining(names.filter((n) => !fused.test(n))));
    for (let i = 0; i < tiny.numLayers; i++) {
      const p = `model.layers.${i}`;
      expect(owners).toContain(`${p}.self_attn.qkv_proj.weight`);
      expect(owners).toContain(`${p}.mlp.gate_up_proj.weight`);
      const [q, k, v] = ['q', 'k', 'v'].map((x) => store.get(`${p}.self_attn.${x}_proj.weight`));
      expect(k!.ptr).toBe(q!.ptr + BigInt(q!.byteLength));
      expect(v!.ptr).toBe(k!.ptr + BigInt(k!.byteLength));
      const [g, u] = ['gate', 'up'].map((x) => store.get(`${p}.mlp.${x}_proj.weight`));
      expect(u!.ptr).toBe(g!.ptr + BigInt(g!.byteLength));
    }
    expect(owners.filter((o) => fused.test(o))).toEqual([]);
    store.dispose();
  });

  it('gives TP rank 1 of 2 exactly its slices', async () => {
    const dir = tempDir();
    writeSafetensors(join(dir, 'model.safetensors'), checkpoint(tiny, 'F32'));
    const store = await loadWeights(dir, tiny, {
      allocator,
      dtype: 'f32',
      tp: { rank: 1, size: 2 },
      onProgress: () => {},
    });
    const read = async (n: string) => asNumbers(await store.readBytes(n), 'f32');
    const rows = (n: string, cols: number, from: number, to: number) =>
      values(n, 1e4).slice(from * cols, to * cols);
    const L = 'model.layers.0';
    // Column-parallel: second half of the rows (q: 2 heads × head_dim 2 = 4 rows of 4).
    expect(store.get(`${L}.self_attn.q_proj.weight`).shape).toEqual([2, 4]);
    expect(await read(`${L}.self_attn.q_proj.weight`)).toEqual(
      rows(`${L}.self_attn.q_proj.weight`, 4, 2, 4),
    );
    expect(await read(`${L}.self_attn.q_proj.bias`)).toEqual(
      rows(`${L}.self_attn.q_proj.bias`, 1, 2, 4),
    );
    expect(await read(`${L}.mlp.up_proj.weight`)).toEqual(rows(`${L}.mlp.up_proj.weight`, 4, 3, 6));
    // One KV head for two ranks: both hold all of it (replicated, as vLLM does).
    expect(store.get(`${L}.self_attn.k_proj.weight`).shape).toEqual([2, 4]);
    expect(await read(`${L}.self_attn.v_proj.weight`)).toEqual(
      rows(`${L}.self_attn.v_proj.weight`, 4, 0, 2),
    );
    // Row-parallel: columns [2, 4) of o_proj [4, 4] and [3, 6) of down_proj [4, 6].
    const o = values(`${L}.self_attn.o_proj.weight`, 16);
    expect(store.get(`${L}.self_attn.o_proj.weight`).shape).toEqual([4, 2]);
    expect(await read(`${L}.self_attn.o_proj.weight`)).toEqual(
      [0, 1, 2, 3].flatMap((r) => o.slice(r * 4 + 2, r * 4 + 4)),
    );
    const d = values(`${L}.mlp.down_proj.weight`, 24);
    expect(await read(`${L}.mlp.down_proj.weight`)).toEqual(
      [0, 1, 2, 3].flatMap((r) => d.slice(r * 6 + 3, r * 6 + 6)),
    );
    // Replicated: norms and the embedding are whole.
    expect(store.get('model.embed_tokens.weight').shape).toEqual([10, 4]);
    expect(await read(`${L}.input_layernorm.weight`)).toEqual(
      values(`${L}.input_layernorm.weight`, 4),
    );
    store.dispose();
  });

  it('refuses a TP size that does not divide the heads', async () => {
    const dir = tempDir();
    writeSafetensors(join(dir, 'model.safetensors'), checkpoint(tiny, 'F32'));
    await expect(
      loadWeights(dir, tiny, { allocator, dtype: 'f32', tp: { rank: 0, size: 3 } }),
    ).rejects.toThrow(
      'Expected a divisor of num_attention_heads (2) for options.tp.size but received 3',
    );
  });

  it('names the tensor, expected and found shape on a mismatch, and frees what it loaded', async () => {
    const dir = tempDir();
    const ck = checkpoint(tiny, 'F32');
    ck['model.layers.0.mlp.up_proj.weight'] = {
      dtype: 'F32',
      shape: [5, 4],
      values: new Array(20).fill(1),
    };
    writeSafetensors(join(dir, 'model.safetensors'), ck);
    const before = allocator.audit().length;
    const err = await loadWeights(dir, tiny, {
      allocator,
      dtype: 'f32',
      onProgress: () => {},
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WeightShapeError);
    expect((err as Error).message).toBe(
      'tensor model.layers.0.mlp.up_proj.weight has shape [5, 4] but the config implies [6, 4]',
    );
    expect(allocator.audit().length).toBe(before);
    delete ck['model.norm.weight'];
    ck['model.layers.0.mlp.up_proj.weight'] = {
      dtype: 'F32',
      shape: [6, 4],
      values: new Array(24).fill(1),
    };
    writeSafetensors(join(dir, 'model.safetensors'), ck);
    await expect(loadWeights(dir, tiny, { allocator, dtype: 'f32' })).rejects.toThrow(
      'tensor model.norm.weight (expected shape [4]) is not in the checkpoint',
    );
  });

  it('says which weight files it looked for', async () => {
    await expect(loadWeights(tempDir(), tiny, { allocator, dtype: 'f32' })).rejects.toThrow(
      'expected model.safetensors or model.safetensors.index.json',
    );
  });

  it('loads every Hugging Face fixture with the shapes its config implies', async () => {
    for (const name of MODEL_FIXTURES) {
      const dir = join(FIXTURES, name);
      const config = await loadModelConfig(dir);
      const store = await loadWeights(dir, config, {
        allocator,
        dtype: 'bf16',
        onProgress: () => {},
      });
      expect(store.get('lm_head.weight').shape, name).toEqual([
        config.vocabSize,
        config.hiddenSize,
      ]);
      expect(store.has('model.layers.1.self_attn.q_norm.weight'), name).toBe(config.qkNorm);
      expect(store.has('model.layers.1.self_attn.k_proj.bias'), name).toBe(config.attentionBias);
      store.dispose();
    }
  });
});
