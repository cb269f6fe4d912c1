import { InvalidArgumentError, Stream } from '@x/core';
import { afterEach, describe, expect, it } from 'vitest';
import { type SamplingRow, sample, sampleUniform } from './sample.js';
import { Arena, expectClose, randomF32, rng } from './test-util.js';

const stream = Stream.create('cpu', { recordOps: true });
const arena = new Arena();
afterEach(async () => {
  await stream.synchronize();
  arena.dispose();
});

async function run(logits: Float32Array, vocab: number, rows: SamplingRow[], numTop = 0) {
  const b = rows.length;
  const sampled = arena.tensor('i32', [b]);
  const lp = arena.f32([b]);
  const ranks = arena.tensor('i32', [b]);
  const topIds = numTop > 0 ? arena.tensor('i32', [b, numTop]) : undefined;
  const topLp = numTop > 0 ? arena.f32([b, numTop]) : undefined;
  sample(stream, arena.f32([b, vocab], logits), rows, {
    sampled,
    sampledLogprobs: lp,
    sampledRanks: ranks,
    ...(topIds && topLp ? { topIds, topLogprobs: topLp } : {}),
  });
  await stream.synchronize();
  return {
    ids: Array.from(arena.readI32(sampled)),
    logprobs: arena.read(lp),
    ranks: Array.from(arena.readI32(ranks)),
    topIds: topIds ? Array.from(arena.readI32(topIds)) : [],
    topLogprobs: topLp ? arena.read(topLp) : new Float32Array(),
  };
}

function logSoftmax(x: ArrayLike<number>): number[] {
  const mx = Math.max(...Array.from(x));
  const lse = mx + Math.log(Array.from(x).reduce((a, v) => a + Math.exp(v - mx), 0));
  return Array.from(x, (v) => v - lse);
}

/** vLLM's order: suppress, logit bias, penalties (then temperature / filters in `allowed`). */
function refProcess(raw: Float32Array, r: SamplingRow): number[] {
  const l = Array.from(raw);
  for (const id of Array.from(r.suppressTokenIds ?? [])) l[id] = Number.NEGATIVE_INFINITY;
  for (const [k, v] of Object.entries(r.logitBias ?? {})) l[Number(k)]! += v;
  const out = Array.from(r.outputTokenIds ?? []);
  const seen = new Set([...Array.from(r.promptTokenIds ?? []), ...out]);
  const rep = r.repetitionPenalty ?? 1;
  for (let i = 0; i < l.length; i++) {
    if (seen.has(i)) l[i] = l[i]! > 0 ? l[i]! / rep : l[i]! * rep;
    const c = out.filter((t) => t === i).length;
    if (c > 0) l[i]! -= (r.frequencyPenalty ?? 0) * c + (r.presencePenalty ?? 0);
  }
  return l;
}

/** The distribution vLLM samples from after temperature, min-p, top-k, top-p. */
function refDistribution(l: number[], r: SamplingRow): number[] {
  const t = l.map((v) => v / (r.temperature ?? 1));
  const mx = Math.max(...t);
  let p = t.map((v) => Math.exp(v - mx));
  if (r.minP) p = p.map((v) => (v < r.minP! ? 0 : v));
  const order = p.map((_, i) => i).sort((a, b) => t[b]! - t[a]! || a - b);
  if (r.topK && r.topK > 0) {
    const kth = t[order[r.topK - 1]!]!;
    p = p.map((v, i) => (t[i]! < kth ? 0 : v));
  }
  if (r.topP !== undefined && r.topP < 1) {
    const total = p.reduce((a, b) => a + b, 0);
    let cum = 0;
    for (let j = order.length - 1; j > 0; j--) {
      cum += p[order[j]!]! / total;
      if (cum <= 1 - r.topP) p[order[j]!] = 0;
      else break;
    }
  }
  const total = p.reduce((a, b) => a + b, 0);
  return p.map((v) => v / total);
}

describe('sample', () => {
  it('greedy picks the argmax of the processed logits; logprobs come from the raw ones', async () => {
    const rand = rng(11);
    const vocab = 101;
    const rows: SamplingRow[] = [];
    for (let b = 0; b < 24; b++) {
      rows.push({
        temperature: 0,
        repetitionPenalty: 1 + rand(),
        presencePenalty: rand() - 0.5,
        frequencyPenalty: rand() - 0.5,
        promptTokenIds: [Math.floor(rand() * vocab), Math.floor(rand() * vocab)],
        outputTokenIds: [1, 2, 2, Math.floor(rand() * vocab)],
        logitBias: { 3: 2 * rand(), 50: -1 },
        suppressTokenIds: b % 2 === 0 ? [4] : [],
      });
    }
    const logits = randomF32(rows.length * vocab, rand, -3, 3);
    const got = await run(logits, vocab, rows, 5);
    rows.forEach((r, b) => {
      const raw = logits.subarray(b * vocab, (b + 1) * vocab);
      const processed = refProcess(raw, r);
      const want = processed.indexOf(Math.max(...processed));
      expect(got.ids[b]).toBe(want);
      const lp = logSoftmax(raw);
      expectClose([got.logprobs[b]!], [lp[want]!], 1e-5, 1e-5);
      expect(got.ranks[b]).toBe(lp.filter((v) => v >= lp[want]!).length);
      const top = lp
        .map((v, i) => [v, i] as const)
        .sort((x, y) => y[0] - x[0])
        .slice(0, 5);
      expect(got.topIds.slice(b * 5, b * 5 + 5)).toEqual(top.map((x) => x[1]));
      expectClose(
        got.topLogprobs.subarray(b * 5, b * 5 + 5),
        top.map((x) => x[0]),
        1e-5,
        1e-5,
      );
    });
  });

  it('temperature → 0 equals greedy', async () => {
    const vocab = 64;
    const logits = randomF32(8 * vocab, rng(12), -2, 2);
    const greedy = await run(
      logits,
      vocab,
      Array.from({ length: 8 }, () => ({ temperature: 0 })),
    );
    const tiny = await run(
      logits,
      vocab,
      Array.from({ length: 8 }, (_, i) => ({ temperature: 1e-6, seed: i })),
    );
    expect(tiny.ids).toEqual(greedy.ids);
  });

  it('is reproducible for a seed and step, whatever the batch around it', async () => {
    const vocab = 50;
    const rand = rng(13);
    const row = randomF32(vocab, rand, -1, 1);
    const other = randomF32(vocab, rand, -1, 1);
    const alone = await run(row, vocab, [{ seed: 42, step: 7 }]);
    const batch = new Float32Array(3 * vocab);
    batch.set(other, 0);
    batch.set(row, vocab);
    batch.set(other, 2 * vocab);
    const mixed = await run(batch, vocab, [{ seed: 1 }, { seed: 42, step: 7 }, {}]);
    expect(mixed.ids[1]).toBe(alone.ids[0]);
    const steps = await run(
      new Float32Array(Array.from({ length: 40 }, () => Array.from(row)).flat()),
      vocab,
      Array.from({ length: 40 }, (_, s) => ({ seed: 42, step: s })),
    );
    expect(new Set(steps.ids).size).toBeGreaterThan(5); // each step draws anew
    expect(sampleUniform(42, 7)).toBe(sampleUniform(42n, 7));
    expect(sampleUniform(42, 7)).not.toBe(sampleUniform(42, 8));
  });

  const filters: Array<[string, SamplingRow]> = [
    ['plain temperature 0.7', { temperature: 0.7 }],
    ['top-k 5', { topK: 5 }],
    ['top-p 0.6', { topP: 0.6 }],
    ['min-p 0.3', { minP: 0.3 }],
    ['top-k 8 + top-p 0.8 + temperature 1.3', { topK: 8, topP: 0.8, temperature: 1.3 }],
    [
      'min-p 0.1 + top-p 0.9 + penalties',
      { minP: 0.1, topP: 0.9, repetitionPenalty: 1.3, outputTokenIds: [0, 1, 1] },
    ],
  ];
  for (const [name, params] of filters) {
    it(`draws from the vLLM distribution: ${name}`, async () => {
      const vocab = 24;
      const n = 4000;
      const raw = randomF32(vocab, rng(14), -2, 2);
      const logits = new Float32Array(n * vocab);
      for (let i = 0; i < n; i++) logits.set(raw, i * vocab);
      const got = await run(
        logits,
        vocab,
        Array.from({ length: n }, (_, s) => ({ ...params, seed: 7, step: s })),
      );
      const want = refDistribution(refProcess(raw, params), params);
      const counts = new Array<number>(vocab).fill(0);
      for (const id of got.ids) counts[id]!++;
      for (let i = 0; i < vocab; i++) {
        if (want[i] === 0) {
          expect(counts[i], `token ${i} is outside the kept set`).toBe(0);
        } else {
          const sigma = Math.sqrt((want[i]! * (1 - want[i]!)) / n);
          expect(Math.abs(counts[i]! / n - want[i]!), `token ${i} frequency`).toBeLessThan(
            5 * sigma + 1e-3,
          );
        }
      }
    });
  }

  it('rejects bad parameters with the row and field named', () => {
    const logits = arena.f32([1, 10], randomF32(10, rng(1)));
    const sampled = arena.tensor('i32', [1]);
    expect(() => sample(stream, logits, [{ topP: 0 }], { sampled })).toThrow(
      /Expected a number in \(0, 1\] for rows\[0\]\.topP but received 0/,
    );
    expect(() => sample(stream, logits, [{ logitBias: { 10: 1 } }], { sampled })).toThrow(
      InvalidArgumentError,
    );
    expect(() => sample(stream, logits, [{}, {}], { sampled })).toThrow(/rows/);
  });
});
