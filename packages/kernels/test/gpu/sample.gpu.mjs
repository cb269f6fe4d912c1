// GPU checks of sample against the CPU kernel with the same seeds: greedy, temperature, top-k,
// top-p, min-p, penalties, logit bias, suppressed ids, logprobs/ranks/top-N, tied logits, a
// 128k vocabulary, bf16 logits, and determinism. Sampled ids must match exactly.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sample, sampleWorkspaceBytes } from '../../dist/index.js';
import { CpuArena, encode, GpuArena, rng, roundTo, SMALL } from './util.mjs';

let gpu;
let cpu;
before(async () => {
  gpu = await GpuArena.create();
  cpu = new CpuArena();
});
after(async () => {
  await gpu.dispose();
  cpu.dispose();
});

function logitsOf(b, v, rand, { ties = false } = {}) {
  const x = new Float32Array(b * v);
  for (let i = 0; i < x.length; i++) {
    // Roughly normal logits with a few strong tokens per row, like a model's.
    const g = (rand() + rand() + rand() - 1.5) * 4;
    x[i] = rand() < 0.001 ? g + 8 : g;
    if (ties) x[i] = Math.round(x[i] * 2) / 2;
  }
  return x;
}

function rowsOf(b, v, rand, kind) {
  return Array.from({ length: b }, (_, i) => {
    const seed = 1000 + i;
    const base = { seed, step: i % 7 };
    const ids = (n) => Array.from({ length: n }, () => Math.floor(rand() * v));
    switch ((kind === 'mixed' ? i : 0) % 8) {
      case 0:
        return kind === 'greedy' ? { temperature: 0 } : { ...base, temperature: 0.8 };
      case 1:
        return { ...base, temperature: 1.0, topK: 1 + (i % 40) };
      case 2:
        return { ...base, temperature: 0.7, topP: 0.9 };
      case 3:
        return { ...base, temperature: 1.2, topK: 50, topP: 0.5, minP: 0.02 };
      case 4:
        return { ...base, temperature: 1.0, minP: 0.1 };
      case 5:
        return {
          ...base,
          temperature: 0.9,
          topP: 0.95,
          repetitionPenalty: 1.3,
          presencePenalty: 0.5,
          frequencyPenalty: 0.4,
          promptTokenIds: ids(50),
          outputTokenIds: [...ids(20), ...ids(5), ...ids(5)],
        };
      case 6:
        return {
          ...base,
          temperature: 0,
          logitBias: { [i]: 100, 7: -5 },
          suppressTokenIds: ids(3),
        };
      default:
        return {
          ...base,
          temperature: 0.6,
          topK: 3,
          suppressTokenIds: ids(10),
          logitBias: { 3: 2.5 },
        };
    }
  });
}

async function compare(
  label,
  { b, v, kind = 'mixed', ties = false, dtype = 'f32', numTop = 5, seed = 1, logits: given },
) {
  const rand = rng(seed);
  let logits = given ?? logitsOf(b, v, rand, { ties });
  if (dtype !== 'f32') logits = roundTo(dtype, logits);
  const rows = rowsOf(b, v, rand, kind);
  const lg = await gpu.upload(dtype, [b, v], dtype === 'f32' ? logits : encode(dtype, logits));
  const outs = {
    sampled: gpu.tensor('i32', [b]),
    sampledLogprobs: gpu.tensor('f32', [b]),
    sampledRanks: gpu.tensor('i32', [b]),
    topIds: gpu.tensor('i32', [b, numTop]),
    topLogprobs: gpu.tensor('f32', [b, numTop]),
  };
  const ws = gpu.tensor('u8', [sampleWorkspaceBytes(b, v)]);
  sample(gpu.stream, lg, rows, outs, { workspace: ws });
  const got = {};
  for (const [k, t] of Object.entries(outs)) got[k] = await gpu.read(t);
  const c = {
    sampled: cpu.tensor('i32', [b]),
    sampledLogprobs: cpu.tensor('f32', [b]),
    sampledRanks: cpu.tensor('i32', [b]),
    topIds: cpu.tensor('i32', [b, numTop]),
    topLogprobs: cpu.tensor('f32', [b, numTop]),
  };
  sample(cpu.stream, cpu.tensor('f32', [b, v], logits), rows, c);
  await cpu.stream.synchronize();
  const want = Object.fromEntries(Object.entries(c).map(([k, t]) => [k, cpu.read(t)]));
  const bad = [];
  for (let r = 0; r < b; r++)
    if (got.sampled[r] !== want.sampled[r])
      bad.push(
        `row ${r}: gpu ${got.sampled[r]} cpu ${want.sampled[r]} ${JSON.stringify(rows[r]).slice(0, 120)}`,
      );
  assert.deepEqual(bad, [], `${label}: sampled ids differ:\n${bad.slice(0, 8).join('\n')}`);
  assert.deepEqual(got.sampledRanks, want.sampledRanks, `${label}: ranks`);
  assert.deepEqual(got.topIds, want.topIds, `${label}: top ids`);
  for (const k of ['sampledLogprobs', 'topLogprobs']) {
    const worst = got[k].reduce((m, x, i) => Math.max(m, Math.abs(x - want[k][i])), 0);
    assert.ok(worst <= 2e-4 && got[k].every(Number.isFinite), `${label}: ${k} differ by ${worst}`);
  }
  return got.sampled;
}

describe('sample on CUDA', () => {
  it('greedy rows equal the CPU', async () => {
    await compare('greedy', { b: 32, v: SMALL ? 500 : 32000, kind: 'greedy' });
  });
  it('greedy: the first maximum across 2048-logit chunks, any vocabulary size', async () => {
    // Row 0: the maximum tied in two chunks (the first wins); row 1: it sits at the last id;
    // row 2: a constant row (id 0); row 3: mostly -inf, the maximum in the last chunk.
    for (const v of [1, 3, 2047, 2048, 2049, 6145, 128256]) {
      const b = 4;
      const rand = rng(v);
      const logits = new Float32Array(b * v);
      for (let i = 0; i < logits.length; i++) logits[i] = rand() * 2 - 1;
      const early = Math.min(5, v - 1);
      const late = v - 1;
      logits[early] = 3;
      logits[late] = 3;
      logits[v + late] = 4;
      logits.fill(0.25, 2 * v, 3 * v);
      logits.fill(-Infinity, 3 * v, 4 * v);
      logits[3 * v + late] = -2;
      logits[3 * v + Math.floor(late / 2)] = -3;
      const got = await compare(`greedy V=${v}`, { b, v, kind: 'greedy', numTop: 1, logits });
      assert.deepEqual([...got], [early, late, 0, late], `V=${v}`);
    }
  });
  it('every option, seeded, equals the CPU draw for draw', async () => {
    await compare('mixed', { b: SMALL ? 16 : 96, v: SMALL ? 1000 : 32000, seed: 2 });
  });
  it('tied logits: top-k/top-p boundaries and draws break ties by id like the CPU', async () => {
    await compare('ties', { b: SMALL ? 16 : 64, v: SMALL ? 700 : 8000, ties: true, seed: 3 });
  });
  it('bf16 and f16 logits, a 128k vocabulary', async () => {
    await compare('bf16 128k', {
      b: SMALL ? 4 : 16,
      v: SMALL ? 3000 : 128256,
      dtype: 'bf16',
      seed: 4,
    });
    await compare('f16', { b: 8, v: 5000, dtype: 'f16', seed: 5, numTop: 20 });
  });
  it('is deterministic: the same inputs give the same draws', async () => {
    const a = await compare('run 1', { b: 24, v: 4000, seed: 6 });
    const b = await compare('run 2', { b: 24, v: 4000, seed: 6 });
    assert.deepEqual(a, b);
  });
  it('back-to-back calls behind a busy stream each read their own parameters', async () => {
    // The GPU is held for 100 ms, so every call's parameter block is still pending when the next
    // call packs its own: a block reused too early would give a later call's draws to an earlier one.
    const [b, v, calls] = [8, 3000, 12];
    const rand = rng(8);
    const logits = logitsOf(b, v, rand);
    const lg = await gpu.upload('f32', [b, v], logits);
    const ws = Array.from({ length: calls }, () => gpu.tensor('u8', [sampleWorkspaceBytes(b, v)]));
    const outs = Array.from({ length: calls }, () => gpu.tensor('i32', [b]));
    const rowsOfCall = Array.from({ length: calls }, (_, c) =>
      Array.from({ length: b }, (_, i) => ({
        temperature: 0.5 + 0.1 * c,
        topP: 0.8,
        seed: 77 * c + i,
        step: c,
      })),
    );
    await gpu.stream.synchronize();
    gpu.stream.delay(100);
    for (let c = 0; c < calls; c++)
      sample(gpu.stream, lg, rowsOfCall[c], { sampled: outs[c] }, { workspace: ws[c] });
    const cl = cpu.tensor('f32', [b, v], logits);
    for (let c = 0; c < calls; c++) {
      const got = await gpu.read(outs[c]);
      const co = cpu.tensor('i32', [b]);
      sample(cpu.stream, cl, rowsOfCall[c], { sampled: co });
      await cpu.stream.synchronize();
      assert.deepEqual(got, cpu.read(co), `call ${c}`);
    }
  });

  it('refuses a missing workspace', async () => {
    const lg = await gpu.upload('f32', [1, 10], new Float32Array(10).fill(1));
    assert.throws(
      () => sample(gpu.stream, lg, [{ temperature: 0 }], { sampled: gpu.tensor('i32', [1]) }),
      /options\.workspace/,
    );
  });
});
