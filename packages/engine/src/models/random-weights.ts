import { InvalidArgumentError, type Tensor } from '@x/core';
import type { Allocation, Allocator } from '@x/cumem';
import type { ModelConfig } from '../config.js';
import { layerWeightNames, type WeightSource } from './architecture.js';
import { architectureSpec } from './registry.js';

/** Options of {@link randomWeights}. */
export interface RandomWeightsOptions {
  allocator: Allocator;
  /** Seed of the deterministic generator (same seed, same weights). */
  seed?: number;
  dtype?: 'f32' | 'bf16';
  /** Half-width of the uniform distribution of matrix entries; default 0.5 / sqrt(hiddenSize). */
  scale?: number;
}

/** Random weights held in @x/cumem allocations (tag `weights`), with dispose(). */
export interface RandomWeights extends WeightSource {
  names(): string[];
  dispose(): void;
}

/** The HF names and shapes of every tensor a checkpoint of `config` holds. */
export function checkpointShapes(config: ModelConfig): Map<string, number[]> {
  const spec = architectureSpec(config.architecture);
  const {
    hiddenSize: h,
    numHeads: nq,
    numKvHeads: nk,
    headDim: hd,
    intermediateSize: im,
    vocabSize: v,
  } = config;
  const m = new Map<string, number[]>([
    ['model.embed_tokens.weight', [v, h]],
    ['model.norm.weight', [h]],
    ['lm_head.weight', [v, h]],
  ]);
  for (let i = 0; i < config.numLayers; i++) {
    const n = layerWeightNames(i);
    m.set(n.inputNorm, [h]).set(n.postNorm, [h]);
    m.set(`${n.q}.weight`, [nq * hd, h])
      .set(`${n.k}.weight`, [nk * hd, h])
      .set(`${n.v}.weight`, [nk * hd, h]);
    m.set(`${n.o}.weight`, [h, nq * hd]);
    if (spec.qkvBias(config))
      m.set(`${n.q}.bias`, [nq * hd])
        .set(`${n.k}.bias`, [nk * hd])
        .set(`${n.v}.bias`, [nk * hd]);
    if (spec.oBias(config)) m.set(`${n.o}.bias`, [h]);
    if (spec.qkNorm(config)) m.set(n.qNorm, [hd]).set(n.kNorm, [hd]);
    m.set(n.gate, [im, h]).set(n.up, [im, h]).set(n.down, [h, im]);
  }
  return m;
}

/**
 * A checkpoint of random weights built in memory (tests and benchmarks without files). Norm weights
 * are drawn around 1, everything else uniformly around 0; never exactly zero.
 */
export async function randomWeights(
  config: ModelConfig,
  options: RandomWeightsOptions,
): Promise<RandomWeights> {
  const { allocator } = options;
  const dtype = options.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'bf16')
    throw new InvalidArgumentError('options.dtype', '"f32" or "bf16"', dtype);
  const scale = options.scale ?? 0.5 / Math.sqrt(config.hiddenSize);
  let state = (options.seed ?? 1) >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const allocations: Allocation[] = [];
  const tensors = new Map<string, Tensor>();
  for (const [name, shape] of checkpointShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    const isNorm = name.endsWith('norm.weight');
    for (let i = 0; i < n; i++)
      values[i] = isNorm ? 0.8 + 0.4 * next() : (2 * next() - 1) * scale || scale / 7;
    const bytes = dtype === 'bf16' ? toBf16(values) : values;
    const a = allocator.alloc(bytes.byteLength, { tag: 'weights', owner: name });
    allocations.push(a);
    await a.write(0, bytes);
    tensors.set(name, a.tensor(dtype, shape));
  }
  return {
    get(name: string): Tensor {
      const t = tensors.get(name);
      if (!t) throw new InvalidArgumentError('name', `a tensor of this checkpoint`, name);
      return t;
    },
    names: () => [...tensors.keys()],
    dispose(): void {
      for (const a of allocations) allocator.free(a);
      allocations.length = 0;
    },
  };
}

/** f32 → bf16 bits, round to nearest even (what torch's .to(bfloat16) does). */
function toBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 16;
  return out;
}
