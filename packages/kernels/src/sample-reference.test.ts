// The CPU sampler against a plain reference at real vocabulary sizes: the reference sorts the whole
// row and walks it in double precision (the algorithm the kernel had before it stopped sorting), and
// with the same uniform number (sampleUniform) both must pick the same token. The kernel's weights
// round exp to f32 (< 2e-7 relative) and to 2^-44 of the most likely token, so draws whose u lands
// within 5e-7 of the total from a token boundary (or top-p decisions that close to 1 - p) are left
// out as ambiguous; the test checks that at least 3 rows in 4 are compared. Rows cover ties, min-p, top-k, top-p, penalties
// and logit bias on flat, moderate and peaked logits, so every selection path of the kernel runs.
import { spawnSync } from 'node:child_process';
import { Stream } from '@x/core';
import { afterAll, describe, expect, it } from 'vitest';
import { type SamplingRow, sample, sampleUniform } from './sample.js';
import { Arena, rng } from './test-util.js';

const stream = Stream.create('cpu');
const arena = new Arena();
afterAll(async () => {
  await stream.synchronize();
  arena.dispose();
});

const f32 = Math.fround;

/** Logits: normal with `std`, or with values rounded to quarters (many exact ties). */
function logitsOf(n: number, seed: number, std: number, ties: boolean): Float32Array {
  const rand = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const z = Math.sqrt(-2 * Math.log(rand() + 1e-12)) * Math.cos(2 * Math.PI * rand());
    out[i] = ties ? Math.round(4 * std * z) / 4 : std * z;
  }
  return out;
}

/** vLLM's order: suppress, logit bias, penalties; in f32 as the kernel computes them. */
function processRow(raw: Float32Array, r: SamplingRow): Float32Array {
  const l = Float32Array.from(raw);
  for (const id of Array.from(r.suppressTokenIds ?? [])) l[id] = Number.NEGATIVE_INFINITY;
  for (const [k, v] of Object.entries(r.logitBias ?? {}))
    l[Number(k)] = f32(l[Number(k)]! + f32(v));
  const out = Array.from(r.outputTokenIds ?? []);
  const seen = new Set([...Array.from(r.promptTokenIds ?? []), ...out]);
  const rep = f32(r.repetitionPenalty ?? 1);
  const freq = f32(r.frequencyPenalty ?? 0);
  const pres = f32(r.presencePenalty ?? 0);
  for (const i of seen) {
    if (rep !== 1) l[i] = l[i]! > 0 ? f32(l[i]! / rep) : f32(l[i]! * rep);
    const c = out.filter((t) => t === i).length;
    if (c > 0) l[i] = f32(l[i]! - f32(f32(freq * c) + pres));
  }
  return l;
}

/** The token the sorted, double-precision algorithm draws, or undefined when ambiguous. */
function reference(raw: Float32Array, r: SamplingRow): number | undefined {
  const t = Float32Array.from(processRow(raw, r), (v) => f32(v / f32(r.temperature ?? 1)));
  let mx = Number.NEGATIVE_INFINITY;
  for (const v of t) if (v > mx) mx = v;
  if (r.minP) {
    const cut = f32(Math.log(f32(r.minP)));
    for (let i = 0; i < t.length; i++) if (f32(t[i]! - mx) < cut) t[i] = Number.NEGATIVE_INFINITY;
  }
  const order = Array.from(t.keys()).sort((a, b) => t[b]! - t[a]! || a - b);
  let kept = order.length;
  if (r.topK && r.topK > 0 && r.topK < t.length) {
    const kth = t[order[r.topK - 1]!]!;
    kept = order.findIndex((i) => t[i]! < kth);
    if (kept < 0) kept = order.length;
  }
  while (kept > 1 && t[order[kept - 1]!] === Number.NEGATIVE_INFINITY) kept--;
  const prob = order.slice(0, kept).map((i) => Math.exp(t[i]! - mx));
  let total = prob.reduce((a, b) => a + b, 0);
  const eps = 5e-7;
  if (r.topP !== undefined && r.topP < 1) {
    let cum = 0;
    let keep = kept;
    for (let j = kept - 1; j > 0; j--) {
      cum += prob[j]! / total;
      if (Math.abs(cum - (1 - f32(r.topP))) < eps) return undefined;
      if (cum <= 1 - f32(r.topP)) keep = j;
      else break;
    }
    for (let j = keep; j < kept; j++) total -= prob[j]!;
    kept = keep;
  }
  const u = sampleUniform(r.seed ?? 0, r.step ?? 0) * total;
  let acc = 0;
  for (let j = 0; j < kept; j++) {
    const next = acc + prob[j]!;
    if (u < next) {
      if (u - acc < eps * total || next - u < eps * total) return undefined;
      return order[j]!;
    }
    acc = next;
  }
  return order[kept - 1]!;
}

function rowsFor(vocab: number, count: number, seed: number): SamplingRow[] {
  const rand = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  return Array.from({ length: count }, (_, b) => {
    const r: SamplingRow = { seed: 1000 + b, step: b % 7, temperature: pick([0.3, 0.7, 1, 1.5]) };
    if (b % 2 === 0) r.topP = pick([0.5, 0.9, 0.95, 0.99]);
    if (b % 3 === 0) r.topK = pick([1, 2, 5, 50, 500, vocab - 1]);
    if (b % 5 === 0) r.minP = pick([0.001, 0.05, 0.2]);
    if (b % 7 === 0) {
      r.repetitionPenalty = 1.3;
      r.presencePenalty = 0.4;
      r.frequencyPenalty = -0.3;
      r.outputTokenIds = [0, 1, 1, 2, 17];
      r.promptTokenIds = [3, 4, 17, vocab - 1];
    }
    if (b % 11 === 0) {
      r.logitBias = { 5: 4, 6: -100 };
      r.suppressTokenIds = [7];
    }
    return r;
  });
}

async function sampleRows(logits: Float32Array, vocab: number, rows: SamplingRow[]) {
  const sampled = arena.tensor('i32', [rows.length]);
  sample(stream, arena.f32([rows.length, vocab], logits), rows, { sampled });
  await stream.synchronize();
  return Array.from(arena.readI32(sampled));
}

describe('sample matches the sorted double-precision algorithm', () => {
  for (const vocab of [32000, 1000]) {
    for (const [shape, std, ties] of [
      ['flat', 0.5, false],
      ['moderate', 3, false],
      ['peaked', 8, false],
      ['tied', 2, true],
    ] as const) {
      it(`vocab ${vocab}, ${shape} logits`, async () => {
        const count = vocab > 1000 ? 24 : 64;
        const rows = rowsFor(vocab, count, vocab + std);
        const logits = new Float32Array(count * vocab);
        for (let b = 0; b < count; b++)
          logits.set(logitsOf(vocab, 31 * b + vocab, std, ties), b * vocab);
        const got = await sampleRows(logits, vocab, rows);
        let compared = 0;
        rows.forEach((r, b) => {
          const want = reference(logits.subarray(b * vocab, (b + 1) * vocab), r);
          if (want === undefined) return;
          compared++;
          expect(got[b], `row ${b} ${JSON.stringify({ ...r, seed: String(r.seed) })}`).toBe(want);
        });
        expect(compared).toBeGreaterThanOrEqual(0.75 * count);
      });
    }
  }
});

describe('sample gives the same bits on every machine', () => {
  it('the portable loops (X_KERNELS_SAMPLE_PORTABLE=1) agree with the vector ones bit for bit', async () => {
    const vocab = 32000;
    const rows = rowsFor(vocab, 16, 5);
    const logits = new Float32Array(rows.length * vocab);
    for (let b = 0; b < rows.length; b++)
      logits.set(logitsOf(vocab, b, 1 + b, b % 3 === 0), b * vocab);
    const run = `
      const { Stream, HostBuffer, Tensor } = await import(${JSON.stringify(import.meta.resolve('@x/core'))});
      const { sample } = await import(${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)});
      const input = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
      const B = input.rows.length, V = input.vocab;
      const keep = [];
      const t = (dtype, shape, data) => {
        const n = shape.reduce((a, b) => a * b, 1);
        const buf = HostBuffer.alloc(n * 4);
        keep.push(buf);
        if (data) new Float32Array(buf.buffer).set(data);
        return new Tensor({ ptr: buf.ptr, dtype, shape, device: 'cpu' });
      };
      const logits = t('f32', [B, V], Float32Array.from(input.logits));
      const out = { sampled: t('i32', [B]), sampledLogprobs: t('f32', [B]), sampledRanks: t('i32', [B]),
        topIds: t('i32', [B, 4]), topLogprobs: t('f32', [B, 4]) };
      const rows = input.rows.map((r) => ({ ...r, seed: BigInt(r.seed) }));
      const s = Stream.create('cpu');
      sample(s, logits, rows, out);
      await s.synchronize();
      const bytes = (x, n) => Array.from(new Uint8Array(keep[keep.indexOf(keep.find((b) => b.ptr === x.ptr))].buffer, 0, n));
      console.log(JSON.stringify([bytes(out.sampled, B * 4), bytes(out.sampledLogprobs, B * 4),
        bytes(out.sampledRanks, B * 4), bytes(out.topIds, B * 16), bytes(out.topLogprobs, B * 16)]));
    `;
    const input = JSON.stringify({
      vocab,
      logits: Array.from(logits),
      rows: rows.map((r) => ({ ...r, seed: String(r.seed) })),
    });
    const result = (portable: boolean) => {
      const r = spawnSync(
        process.execPath,
        ['--input-type=commonjs', '-e', `(async () => { ${run} })()`],
        {
          input,
          encoding: 'utf8',
          timeout: 60_000,
          env: { ...process.env, X_KERNELS_SAMPLE_PORTABLE: portable ? '1' : '0' },
        },
      );
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.trim();
    };
    const vector = result(false);
    expect(vector.length).toBeGreaterThan(0);
    expect(result(true)).toBe(vector);
  });
});
