import { Stream } from '@x/core';
import { afterEach, describe, expect, it } from 'vitest';
import { embedding } from './embedding.js';
import { rmsNorm } from './rms-norm.js';
import { ropeCosSinCache } from './rope-cache.js';
import { rotaryEmbedding } from './rotary-embedding.js';
import { siluAndMul } from './silu-and-mul.js';
import { Arena, expectClose, fromBf16, randomF32, rng, toBf16 } from './test-util.js';

const stream = Stream.create('cpu', { recordOps: true });
const arena = new Arena();
afterEach(async () => {
  await stream.synchronize();
  arena.dispose();
});

describe('embedding', () => {
  for (const dtype of ['f32', 'bf16'] as const) {
    it(`gathers rows of a ${dtype} table`, async () => {
      const rand = rng(1);
      const [v, h, t] = [37, 19, 11];
      let table = randomF32(v * h, rand);
      const tableT =
        dtype === 'bf16' ? arena.tensor('bf16', [v, h], toBf16(table)) : arena.f32([v, h], table);
      if (dtype === 'bf16') table = fromBf16(toBf16(table));
      const ids = Array.from({ length: t }, () => Math.floor(rand() * v));
      const out = arena.f32([t, h]);
      embedding(stream, out, tableT, arena.i32([t], ids));
      await stream.synchronize();
      const want = new Float32Array(t * h);
      ids.forEach((id, i) => {
        want.set(table.subarray(id * h, id * h + h), i * h);
      });
      expectClose(arena.read(out), want, 0, 0);
      expect(stream.completedOps()).toContain('kernels.embedding');
    });
  }

  it('fails the stream on an id outside the vocabulary', async () => {
    const out = arena.f32([2, 4]);
    embedding(stream, out, arena.f32([3, 4], randomF32(12, rng(2))), arena.i32([2], [1, 3]));
    await expect(stream.synchronize()).rejects.toThrow(/kernels\.embedding|embedding/);
  });
});

function refRmsNorm(
  x: Float32Array,
  w: Float32Array,
  rows: number,
  h: number,
  eps: number,
): Float32Array {
  const out = new Float32Array(rows * h);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < h; i++) ss += x[r * h + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / h + eps);
    for (let i = 0; i < h; i++) out[r * h + i] = x[r * h + i]! * inv * w[i]!;
  }
  return out;
}

describe('rmsNorm', () => {
  for (const [rows, h, wd] of [
    [1, 8, 'f32'],
    [7, 33, 'f32'],
    [13, 257, 'bf16'],
  ] as const) {
    it(`normalizes [${rows}, ${h}] with ${wd} weight`, async () => {
      const rand = rng(h);
      const x = randomF32(rows * h, rand, -3, 3);
      let w = randomF32(h, rand, 0.5, 1.5);
      const wT = wd === 'bf16' ? arena.tensor('bf16', [h], toBf16(w)) : arena.f32([h], w);
      if (wd === 'bf16') w = fromBf16(toBf16(w));
      const out = arena.f32([rows, h]);
      rmsNorm(stream, out, arena.f32([rows, h], x), wT, { eps: 1e-5 });
      await stream.synchronize();
      expectClose(arena.read(out), refRmsNorm(x, w, rows, h, 1e-5), 1e-5, 1e-6);
    });
  }

  it('fuses the residual add (vLLM fused_add_rms_norm)', async () => {
    const rand = rng(5);
    const [rows, h] = [5, 31];
    const x = randomF32(rows * h, rand);
    const res = randomF32(rows * h, rand);
    const w = randomF32(h, rand);
    const resT = arena.f32([rows, h], res);
    const out = arena.f32([rows, h]);
    rmsNorm(stream, out, arena.f32([rows, h], x), arena.f32([h], w), { eps: 1e-6, residual: resT });
    await stream.synchronize();
    const sum = x.map((v, i) => v + res[i]!);
    expectClose(arena.read(resT), sum, 0, 0);
    expectClose(arena.read(out), refRmsNorm(sum, w, rows, h, 1e-6), 1e-5, 1e-6);
  });

  it('normalizes each head of a [T, heads·headDim] view (Qwen3 q/k norm)', async () => {
    const rand = rng(6);
    const [t, heads, hd] = [3, 5, 16];
    const x = randomF32(t * heads * hd, rand);
    const w = randomF32(hd, rand);
    const xT = arena.f32([t, heads * hd], x);
    rmsNorm(stream, xT.reshape([t * heads, hd]), xT.reshape([t * heads, hd]), arena.f32([hd], w), {
      eps: 1e-6,
    });
    await stream.synchronize();
    expectClose(arena.read(xT), refRmsNorm(x, w, t * heads, hd, 1e-6), 1e-5, 1e-6);
  });
});

describe('siluAndMul', () => {
  it('computes silu(gate) · up on odd sizes, with a strided output', async () => {
    const rand = rng(7);
    const [t, i] = [9, 45];
    const x = randomF32(t * 2 * i, rand, -4, 4);
    const wide = arena.f32([t, i + 3]);
    const out = wide.slice(1, 0, i);
    siluAndMul(stream, out, arena.f32([t, 2 * i], x));
    await stream.synchronize();
    const got = arena.read(wide);
    for (let r = 0; r < t; r++) {
      for (let c = 0; c < i; c++) {
        const g = x[r * 2 * i + c]!;
        const want = (g / (1 + Math.exp(-g))) * x[r * 2 * i + i + c]!;
        expectClose([got[r * (i + 3) + c]!], [want], 1e-5, 1e-6);
      }
      expect(Number.isNaN(got[r * (i + 3) + i]!)).toBe(true); // the gap stays untouched
    }
  });
});

function refRotary(
  x: Float32Array,
  pos: number[],
  heads: number,
  hd: number,
  rd: number,
  cache: Float32Array,
  neox: boolean,
) {
  const out = Float32Array.from(x);
  const half = rd / 2;
  pos.forEach((p, t) => {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * hd;
      for (let i = 0; i < half; i++) {
        const c = cache[p * rd + i]!;
        const s = cache[p * rd + half + i]!;
        const [a, b] = neox ? [base + i, base + i + half] : [base + 2 * i, base + 2 * i + 1];
        out[a] = x[a]! * c - x[b]! * s;
        out[b] = x[b]! * c + x[a]! * s;
      }
    }
  });
  return out;
}

describe('rotaryEmbedding', () => {
  for (const [neox, rd, posType] of [
    [true, 16, 'i32'],
    [false, 16, 'i64'],
    [true, 8, 'i64'],
  ] as const) {
    it(`rotates q and k (neox ${neox}, rotaryDim ${rd}, ${posType} positions)`, async () => {
      const rand = rng(rd + (neox ? 1 : 0));
      const [t, nq, nk, hd, maxPos] = [7, 6, 2, 16, 50];
      const cache = ropeCosSinCache({ rotaryDim: rd, theta: 10000, maxPositions: maxPos });
      const pos = Array.from({ length: t }, () => Math.floor(rand() * maxPos));
      const q = randomF32(t * nq * hd, rand);
      const k = randomF32(t * nk * hd, rand);
      const qT = arena.f32([t, nq * hd], q);
      const kT = arena.f32([t, nk * hd], k);
      const posT = posType === 'i32' ? arena.i32([t], pos) : arena.i64([t], pos);
      rotaryEmbedding(stream, posT, qT, kT, arena.f32([maxPos, rd], cache), {
        headDim: hd,
        rotaryDim: rd,
        neox,
      });
      await stream.synchronize();
      expectClose(arena.read(qT), refRotary(q, pos, nq, hd, rd, cache, neox), 1e-5, 1e-6);
      expectClose(arena.read(kT), refRotary(k, pos, nk, hd, rd, cache, neox), 1e-5, 1e-6);
    });
  }

  it('builds the transformers cos/sin cache, default and llama3-scaled', () => {
    const plain = ropeCosSinCache({ rotaryDim: 8, theta: 500000, maxPositions: 3 });
    const invFreq = [0, 1, 2, 3].map((i) => 1 / 500000 ** ((2 * i) / 8));
    expectClose(
      plain.subarray(2 * 8, 2 * 8 + 4),
      invFreq.map((f) => Math.cos(2 * f)),
      1e-6,
      1e-7,
    );
    expectClose(
      plain.subarray(2 * 8 + 4, 3 * 8),
      invFreq.map((f) => Math.sin(2 * f)),
      1e-6,
      1e-7,
    );
    // llama3: low frequencies (long wavelengths) divided by factor, high ones kept, medium smoothed.
    const scaling = {
      type: 'llama3' as const,
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    };
    const scaled = ropeCosSinCache({ rotaryDim: 128, theta: 500000, maxPositions: 2, scaling });
    const base = ropeCosSinCache({ rotaryDim: 128, theta: 500000, maxPositions: 2 });
    expect(scaled[128]).toBe(base[128]); // highest frequency unchanged
    const f63 = 1 / 500000 ** (126 / 128);
    expectClose([scaled[128 + 64 + 63]!], [Math.sin(f63 / 8)], 1e-5, 0); // sin at position 1
  });
});
