// Random bf16 weights of a Llama-3.1-8B-shaped model built on the GPU in seconds (no download):
// a few 64 MiB periods of uniform random bf16 are generated on the host once, uploaded, and tiled
// into every weight by device-to-device copies. Laid out like loadWeights does (q/k/v and gate/up
// back to back in one allocation each), so the decoder runs them as one GEMM each.
import { HostBuffer, InvalidArgumentError } from '@x/core';
import { layerWeightNames } from '../src/models/architecture.ts';

/** Llama-3.1-8B's shapes (config.json of meta-llama/Llama-3.1-8B). */
export const LLAMA_8B = {
  architecture: 'LlamaForCausalLM',
  hiddenSize: 4096,
  intermediateSize: 14336,
  numLayers: 32,
  numHeads: 32,
  numKvHeads: 8,
  headDim: 128,
  vocabSize: 128256,
  rmsNormEps: 1e-5,
  ropeTheta: 500000,
  ropeScaling: {
    type: 'llama3',
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  },
  maxPositionEmbeddings: 131072,
  tieWordEmbeddings: false,
  attentionBias: false,
  qkNorm: false,
  dtype: 'bf16',
  bosTokenId: 128000,
  eosTokenIds: [128001],
};

const PERIOD = 64 << 20; // bytes of one random period

/** bf16 bits of uniform values in [lo, hi) (xorshift32; never exactly zero). */
function noise(host, lo, hi, seed) {
  const u16 = new Uint16Array(host.buffer);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < u16.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    f[0] = lo + ((x >>> 0) / 4294967296) * (hi - lo) || (hi - lo) / 7;
    u16[i] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16;
  }
}

/**
 * Allocates and fills the weights of `config` (bf16, tag `weights`) on `stream`'s device.
 * Returns a WeightSource with dispose().
 */
export async function buildWeights(allocator, stream, config) {
  const h = config.hiddenSize;
  const periods = {};
  const host = HostBuffer.alloc(PERIOD, { device: stream.device });
  const made = [];
  for (const [name, lo, hi, seed] of [
    ['matrix', -1 / 64, 1 / 64, 1],
    ['norm', 0.8, 1.2, 2],
    ['embed', -1, 1, 3],
  ]) {
    noise(host, lo, hi, seed);
    const a = allocator.alloc(PERIOD, { tag: 'activations', owner: `bench.noise.${name}` });
    stream.copy(a.ptr, host.ptr, PERIOD);
    await stream.synchronize();
    periods[name] = a;
    made.push(a);
  }
  const tensors = new Map();
  const allocations = [];
  const group = (owner, kind, parts) => {
    const bytes = parts.reduce((n, [, shape]) => n + shape[0] * (shape[1] ?? 1) * 2, 0);
    const a = allocator.alloc(bytes, { tag: 'weights', owner });
    allocations.push(a);
    for (let off = 0; off < bytes; off += PERIOD) {
      stream.copy(a.ptr + BigInt(off), periods[kind].ptr, Math.min(PERIOD, bytes - off));
    }
    let at = 0;
    for (const [name, shape] of parts) {
      tensors.set(name, a.tensor('bf16', shape, at));
      at += shape[0] * (shape[1] ?? 1) * 2;
    }
  };
  const qW = config.numHeads * config.headDim;
  const kvW = config.numKvHeads * config.headDim;
  const im = config.intermediateSize;
  group('embed', 'embed', [['model.embed_tokens.weight', [config.vocabSize, h]]]);
  group('lm_head', 'matrix', [['lm_head.weight', [config.vocabSize, h]]]);
  group('norm', 'norm', [['model.norm.weight', [h]]]);
  for (let i = 0; i < config.numLayers; i++) {
    const n = layerWeightNames(i);
    group(`${i}.qkv`, 'matrix', [
      [`${n.q}.weight`, [qW, h]],
      [`${n.k}.weight`, [kvW, h]],
      [`${n.v}.weight`, [kvW, h]],
    ]);
    group(`${i}.o`, 'matrix', [[`${n.o}.weight`, [h, qW]]]);
    group(`${i}.gate_up`, 'matrix', [
      [n.gate, [im, h]],
      [n.up, [im, h]],
    ]);
    group(`${i}.down`, 'matrix', [[n.down, [h, im]]]);
    group(`${i}.norms`, 'norm', [
      [n.inputNorm, [h]],
      [n.postNorm, [h]],
    ]);
  }
  await stream.synchronize();
  for (const a of made) allocator.free(a);
  host.dispose();
  return {
    get(name) {
      const t = tensors.get(name);
      if (!t) throw new InvalidArgumentError('name', 'a weight of the benchmark model', name);
      return t;
    },
    dispose() {
      for (const a of allocations) allocator.free(a);
      allocations.length = 0;
    },
  };
}
