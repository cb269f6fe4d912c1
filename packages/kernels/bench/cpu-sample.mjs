#!/usr/bin/env node
// Micro-benchmark of the CPU sampler (kernels.sample on a CPU stream): milliseconds per row at a
// given vocabulary for greedy and sampled rows (temperature, top-k, top-p, min-p, penalties,
// logprobs), on logits shaped like a language model's (normal, std 3: a few hundred tokens carry
// most of the mass) and on a flat worst case (std 0.5: top-p keeps most of the vocabulary).
//
//   node packages/kernels/bench/cpu-sample.mjs [--vocab 32000] [--rows 1] [--iters 200] [--json]
//     [--only <case substring>]
//
// Run after `pnpm --filter @x/kernels run build`. Each case: 20 warm-up calls, then 5 repeats of
// `iters` calls of one [rows, vocab] batch enqueued behind a 100 ms stream delay and timed with
// events recorded on the stream after the delay and after the last call, so only the kernel's own
// time is counted (not the JS enqueue, not the wake-up of the stream thread); the median of the
// repeats is reported. X_KERNELS_THREADS pins the pool (rows run in parallel, one per thread).
import { parseArgs } from 'node:util';
import { Event, HostBuffer, Stream, Tensor } from '@x/core';
import { cpuKernelInfo, sample } from '../dist/index.js';

const { values } = parseArgs({
  options: {
    vocab: { type: 'string', default: '32000' },
    rows: { type: 'string', default: '1' },
    iters: { type: 'string', default: '200' },
    json: { type: 'boolean', default: false },
    only: { type: 'string' },
  },
});
const vocab = Number(values.vocab);
const rows = Number(values.rows);
const iters = Number(values.iters);

/** Seeded normal numbers (Box-Muller over mulberry32). */
function normals(n, seed, std) {
  let a = seed >>> 0;
  const rand = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 1) / 4294967297;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = std * Math.sqrt(-2 * Math.log(rand())) * Math.cos(2 * Math.PI * rand());
  }
  return out;
}

const buffers = [];
function tensor(dtype, shape, data) {
  const n = shape.reduce((x, y) => x * y, 1);
  const b = HostBuffer.alloc(Math.max(1, n * 4));
  buffers.push(b);
  if (data) new Uint8Array(b.buffer).set(new Uint8Array(data.buffer, data.byteOffset, n * 4));
  return new Tensor({ ptr: b.ptr, dtype, shape, device: 'cpu' });
}

const history = Array.from({ length: 200 }, (_, i) => (i * 7919) % vocab);
const cases = [
  ['greedy', { temperature: 0 }],
  ['temperature 0.8', { temperature: 0.8 }],
  ['top-k 50', { temperature: 0.8, topK: 50 }],
  ['top-p 0.9', { temperature: 0.8, topP: 0.9 }],
  ['top-p 0.95 + top-k 100', { temperature: 0.7, topP: 0.95, topK: 100 }],
  ['min-p 0.05', { temperature: 1, minP: 0.05 }],
  [
    'penalties + top-p 0.9',
    {
      temperature: 0.8,
      topP: 0.9,
      repetitionPenalty: 1.1,
      presencePenalty: 0.5,
      frequencyPenalty: 0.2,
      promptTokenIds: history.slice(0, 100),
      outputTokenIds: history.slice(100),
    },
  ],
  ['greedy + logprobs 5', { temperature: 0 }, 5],
  ['top-p 0.9 + logprobs 5', { temperature: 0.8, topP: 0.9 }, 5],
];

const stream = Stream.create('cpu');
const results = [];
for (const [shape, std] of [
  ['llm-like (std 3)', 3],
  ['flat (std 0.5)', 0.5],
]) {
  const logits = tensor('f32', [rows, vocab], normals(rows * vocab, 1234, std));
  const sampled = tensor('i32', [rows]);
  const lp = tensor('f32', [rows]);
  const ranks = tensor('i32', [rows]);
  const topIds = tensor('i32', [rows, 5]);
  const topLp = tensor('f32', [rows, 5]);
  for (const [name, params, numTop = 0] of cases) {
    if (values.only && !name.includes(values.only)) continue;
    const batch = Array.from({ length: rows }, (_, i) => ({ ...params, seed: 1000 + i, step: 0 }));
    const outputs =
      numTop > 0
        ? { sampled, sampledLogprobs: lp, sampledRanks: ranks, topIds, topLogprobs: topLp }
        : { sampled };
    for (let i = 0; i < 20; i++) sample(stream, logits, batch, outputs);
    await stream.synchronize();
    const means = [];
    for (let rep = 0; rep < 5; rep++) {
      const start = Event.create('cpu', { timing: true });
      const end = Event.create('cpu', { timing: true });
      stream.delay(100);
      start.record(stream);
      for (let i = 0; i < iters; i++) {
        for (const r of batch) r.step = i;
        sample(stream, logits, batch, outputs);
      }
      end.record(stream);
      await end.wait();
      if (!start.query()) throw new Error('the start event did not complete');
      means.push(start.elapsedTime(end) / iters);
    }
    means.sort((x, y) => x - y);
    const ms = means[2];
    results.push({ shape, case: name, msPerCall: ms, msPerRow: ms / rows });
  }
}
for (const b of buffers) b.dispose();

const info = cpuKernelInfo();
if (values.json) {
  console.log(
    JSON.stringify({ vocab, rows, iters, threads: info.threads, avx2: info.avx2, results }),
  );
} else {
  console.log(
    `CPU sampler, vocab ${vocab}, ${rows} row(s) per call, ${info.threads} thread(s), avx2 ${info.avx2}`,
  );
  console.log('| logits | case | ms / call | ms / row |');
  console.log('| --- | --- | ---: | ---: |');
  for (const r of results) {
    console.log(
      `| ${r.shape} | ${r.case} | ${r.msPerCall.toFixed(3)} | ${r.msPerRow.toFixed(3)} |`,
    );
  }
}
