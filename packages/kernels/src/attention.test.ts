import { Stream } from '@x/core';
import { afterEach, describe, expect, it } from 'vitest';
import { pagedAttention } from './paged-attention.js';
import { reshapeAndCache } from './reshape-and-cache.js';
import { Arena, expectClose, randomF32, rng } from './test-util.js';

const stream = Stream.create('cpu', { recordOps: true });
const arena = new Arena();
afterEach(async () => {
  await stream.synchronize();
  arena.dispose();
});

describe('reshapeAndCache', () => {
  it('writes each token to its slot and skips slot -1', async () => {
    const rand = rng(3);
    const [nb, bs, nk, hd, t] = [4, 5, 2, 8, 6];
    const k = randomF32(t * nk * hd, rand);
    const v = randomF32(t * nk * hd, rand);
    const slots = [7, -1, 0, 19, 12, -1];
    const kc = arena.f32([nb, bs, nk, hd]);
    const vc = arena.f32([nb, bs, nk, hd]);
    reshapeAndCache(
      stream,
      arena.f32([t, nk * hd], k),
      arena.f32([t, nk * hd], v),
      kc,
      vc,
      arena.i64([t], slots),
    );
    await stream.synchronize();
    const kg = arena.read(kc);
    const vg = arena.read(vc);
    const w = nk * hd;
    const written = new Set<number>();
    slots.forEach((s, i) => {
      if (s < 0) return;
      written.add(s);
      expectClose(kg.subarray(s * w, s * w + w), k.subarray(i * w, i * w + w), 0, 0);
      expectClose(vg.subarray(s * w, s * w + w), v.subarray(i * w, i * w + w), 0, 0);
    });
    for (let s = 0; s < nb * bs; s++) {
      if (!written.has(s)) expect(kg.subarray(s * w, s * w + w).every(Number.isNaN)).toBe(true);
    }
  });

  it('fails the stream on a slot outside the cache', async () => {
    const kc = arena.f32([1, 2, 1, 4]);
    const x = arena.f32([1, 4], randomF32(4, rng(1)));
    reshapeAndCache(stream, x, x, kc, arena.f32([1, 2, 1, 4]), arena.i64([1], [2]));
    await expect(stream.synchronize()).rejects.toThrow();
  });
});

/** Dense causal attention of one sequence over its full keys/values [len, nk, hd]. */
function refAttention(
  q: Float32Array,
  keys: Float32Array,
  vals: Float32Array,
  qPos: number[],
  nq: number,
  nk: number,
  hd: number,
  scale: number,
) {
  const out = new Float32Array(qPos.length * nq * hd);
  const group = nq / nk;
  qPos.forEach((pos, i) => {
    for (let h = 0; h < nq; h++) {
      const g = Math.floor(h / group);
      const scores: number[] = [];
      for (let j = 0; j <= pos; j++) {
        let s = 0;
        for (let d = 0; d < hd; d++) s += q[(i * nq + h) * hd + d]! * keys[(j * nk + g) * hd + d]!;
        scores.push(s * scale);
      }
      const mx = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - mx));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < hd; d++) {
        let acc = 0;
        for (let j = 0; j <= pos; j++) acc += e[j]! * vals[(j * nk + g) * hd + d]!;
        out[(i * nq + h) * hd + d] = acc / sum;
      }
    }
  });
  return out;
}

describe('pagedAttention', () => {
  const configs: Array<{
    nq: number;
    nk: number;
    hd: number;
    bs: number;
    seqs: Array<[number, number]>;
  }> = [
    { nq: 4, nk: 4, hd: 16, bs: 16, seqs: [[1, 1]] }, // one decode token, context 1
    {
      nq: 8,
      nk: 2,
      hd: 32,
      bs: 4,
      seqs: [
        [5, 5],
        [1, 9],
        [3, 17],
      ],
    }, // full prefill, decode, chunk
    {
      nq: 6,
      nk: 1,
      hd: 24,
      bs: 16,
      seqs: [
        [1, 40],
        [20, 33],
        [1, 2],
      ],
    }, // MQA, ragged
    {
      nq: 9,
      nk: 3,
      hd: 8,
      bs: 3,
      seqs: [
        [7, 7],
        [2, 11],
      ],
    }, // odd sizes, GQA 3
  ];
  for (const { nq, nk, hd, bs, seqs } of configs) {
    it(`nq ${nq} nk ${nk} hd ${hd} block ${bs}, (qlen, seqLen) ${JSON.stringify(seqs)}`, async () => {
      const rand = rng(nq * 100 + nk * 10 + bs);
      const maxBlocks = Math.max(...seqs.map(([, l]) => Math.ceil(l / bs)));
      const numBlocks = seqs.reduce((a, [, l]) => a + Math.ceil(l / bs), 0) + 3;
      // Blocks handed out in a scrambled order, so the block table matters.
      const free = Array.from({ length: numBlocks }, (_, i) => i).sort(() => rand() - 0.5);
      const w = nk * hd;
      const kc = new Float32Array(numBlocks * bs * w).fill(Number.NaN);
      const vc = new Float32Array(numBlocks * bs * w).fill(Number.NaN);
      const tables = new Int32Array(seqs.length * maxBlocks).fill(-1);
      const qs: Float32Array[] = [];
      const want: Float32Array[] = [];
      const qsl = [0];
      seqs.forEach(([qlen, len], b) => {
        const keys = randomF32(len * w, rand);
        const vals = randomF32(len * w, rand);
        for (let i = 0; i < Math.ceil(len / bs); i++) tables[b * maxBlocks + i] = free.pop()!;
        for (let j = 0; j < len; j++) {
          const slot = tables[b * maxBlocks + Math.floor(j / bs)]! * bs + (j % bs);
          kc.set(keys.subarray(j * w, j * w + w), slot * w);
          vc.set(vals.subarray(j * w, j * w + w), slot * w);
        }
        const q = randomF32(qlen * nq * hd, rand);
        qs.push(q);
        const pos = Array.from({ length: qlen }, (_, i) => len - qlen + i);
        want.push(refAttention(q, keys, vals, pos, nq, nk, hd, 1 / Math.sqrt(hd)));
        qsl.push(qsl[b]! + qlen);
      });
      const t = qsl[seqs.length]!;
      const qAll = new Float32Array(t * nq * hd);
      qs.forEach((q, b) => {
        qAll.set(q, qsl[b]! * nq * hd);
      });
      const out = arena.f32([t, nq * hd]);
      pagedAttention(
        stream,
        out,
        arena.f32([t, nq * hd], qAll),
        arena.f32([numBlocks, bs, nk, hd], kc),
        arena.f32([numBlocks, bs, nk, hd], vc),
        {
          blockTables: arena.i32([seqs.length, maxBlocks], tables),
          seqLens: arena.i32(
            [seqs.length],
            seqs.map(([, l]) => l),
          ),
          queryStartLoc: arena.i32([seqs.length + 1], qsl),
          scale: 1 / Math.sqrt(hd),
        },
      );
      await stream.synchronize();
      const expected = new Float32Array(t * nq * hd);
      want.forEach((wnt, b) => {
        expected.set(wnt, qsl[b]! * nq * hd);
      });
      expectClose(arena.read(out), expected, 1e-4, 1e-5);
      expect(stream.completedOps()).toContain('kernels.pagedAttention');
    });
  }

  it('fails the stream when seqLens exceeds the block table', async () => {
    const kc = arena.f32([2, 4, 1, 8], randomF32(64, rng(4)));
    const q = arena.f32([1, 8], randomF32(8, rng(5)));
    pagedAttention(stream, arena.f32([1, 8]), q, kc, kc, {
      blockTables: arena.i32([1, 1], [0]),
      seqLens: arena.i32([1], [5]),
      queryStartLoc: arena.i32([2], [0, 1]),
      scale: 0.3,
    });
    await expect(stream.synchronize()).rejects.toThrow();
  });

  it('accepts hostMetadata and earlierKeysReady (ignored on the CPU) and rejects non-booleans', async () => {
    const kc = arena.f32([2, 4, 1, 8], randomF32(64, rng(6)));
    const q = arena.f32([1, 8], randomF32(8, rng(7)));
    const meta = () => ({
      blockTables: arena.i32([1, 1], [0]),
      seqLens: arena.i32([1], [3]),
      queryStartLoc: arena.i32([2], [0, 1]),
      scale: 0.3,
    });
    const a = arena.f32([1, 8]);
    const b = arena.f32([1, 8]);
    pagedAttention(stream, a, q, kc, kc, meta());
    pagedAttention(stream, b, q, kc, kc, { ...meta(), hostMetadata: true, earlierKeysReady: true });
    await stream.synchronize();
    expect(arena.read(b)).toEqual(arena.read(a));
    const bad = { ...meta(), hostMetadata: 1 as unknown as boolean };
    expect(() => pagedAttention(stream, arena.f32([1, 8]), q, kc, kc, bad)).toThrow(
      /a boolean for options\.hostMetadata/,
    );
    const bad2 = { ...meta(), earlierKeysReady: 'yes' as unknown as boolean };
    expect(() => pagedAttention(stream, arena.f32([1, 8]), q, kc, kc, bad2)).toThrow(
      /a boolean for options\.earlierKeysReady/,
    );
  });
});
