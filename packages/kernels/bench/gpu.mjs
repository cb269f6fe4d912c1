#!/usr/bin/env node
// `pnpm bench:gpu`: @x/kernels on CUDA against the hardware floor measured in the same run.
//   - memory-bound kernels (RMSNorm, rotary, SiLU-and-mul, embedding, KV write, decode attention):
//     bytes each must move / time, against a device-to-device copy of 1 GiB (read + write counted);
//   - GEMMs at Llama-3.1-8B shapes against torch.matmul at the same shapes in the same run
//     (bench/torch_matmul.py; both sides replay CUDA graphs of back-to-back calls, so neither side's
//     launch overhead counts), and a large bf16 GEMM for the tensor-core ceiling;
//   - prefill attention throughput (TFLOP/s) against that ceiling; sampling time.
// Prints a table; with $OUT set writes $OUT/bench-kernels.json. Always exits 0 (it reports).
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CudaGraph, devices, Event, HostBuffer, Stream, Tensor } from '../../core/dist/index.js';
import { Allocator } from '../../cumem/dist/index.js';
import {
  copyWithIndexCopy,
  embedding,
  fusedLinear,
  indexCopy,
  MATMUL_WORKSPACE_BYTES,
  matmul,
  pagedAttention,
  pagedAttentionWorkspaceBytes,
  reshapeAndCache,
  rmsNorm,
  ropeCosSinCache,
  rotaryEmbedding,
  sample,
  sampleWorkspaceBytes,
  siluAndMul,
} from '../dist/index.js';

const DEV = 'cuda:0';
const here = dirname(fileURLToPath(import.meta.url));
const gpuName = devices().find((d) => d.device === DEV)?.name ?? 'unknown GPU';
const alloc = await Allocator.create({ device: DEV });
const s = Stream.create(DEV);
alloc.registerStream(s);
const BYTES = { f32: 4, bf16: 2, i32: 4, i64: 8, u8: 1 };
const live = [];

function tensor(dtype, shape, tag = 'activations') {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = alloc.alloc(Math.max(256, n * BYTES[dtype]), { tag, owner: 'bench' });
  live.push(a);
  return new Tensor({ ptr: a.ptr, dtype, shape, device: DEV });
}
function freeAll() {
  s.synchronizeSync();
  for (const a of live.splice(0)) alloc.free(a);
}

// Random bf16 in [-1, 1) in pinned memory, tiled into device tensors (never time on zeros).
const CHUNK = 32 << 20;
const noise = HostBuffer.alloc(CHUNK, { device: DEV });
{
  const u16 = new Uint16Array(noise.buffer);
  let x = 12345;
  for (let i = 0; i < u16.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const f = new Float32Array([(x / 2 ** 32) * 2 - 1]);
    u16[i] = new Uint32Array(f.buffer)[0] >>> 16;
  }
}
function randomize(t) {
  const total = t.byteLength;
  for (let off = 0; off < total; off += CHUNK)
    s.copy(t.ptr + BigInt(off), noise.ptr, Math.min(CHUNK, total - off));
  return t;
}
async function upload(dtype, shape, data, tag) {
  const t = tensor(dtype, shape, tag);
  const h = HostBuffer.alloc(data.byteLength, { device: DEV });
  new Uint8Array(h.buffer).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  s.copy(t.ptr, h.ptr, data.byteLength);
  await s.synchronize();
  h.dispose();
  return t;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const start = Event.create(DEV, { timing: true });
const end = Event.create(DEV, { timing: true });

/**
 * Median milliseconds of one call of `fn` on the GPU: 2 warm-up calls, then 5 repetitions of
 * `iters` calls back to back. Before each repetition a 30 ms delay kernel holds the stream, so all
 * `iters` calls are enqueued while the GPU is busy and the events time the kernels alone, not the
 * host's enqueue cost (which would otherwise count whenever a call's JS work outlasts its kernel).
 */
function timeIt(fn, iters = 10) {
  fn(0);
  fn(1);
  const times = [];
  for (let r = 0; r < 5; r++) {
    s.delay(30);
    start.record(s);
    for (let i = 0; i < iters; i++) fn(i);
    end.record(s);
    end.synchronizeSync();
    times.push(start.elapsedTime(end) / iters);
  }
  return median(times);
}
/** The same, replaying a graph of `iters` calls (launch overhead excluded). */
function timeGraph(fn, iters) {
  fn(0);
  s.synchronizeSync();
  const g = CudaGraph.capture(s, () => {
    for (let i = 0; i < iters; i++) fn(i);
  });
  g.launch(s);
  const times = [];
  for (let r = 0; r < 5; r++) {
    start.record(s);
    g.launch(s);
    end.record(s);
    end.synchronizeSync();
    times.push(start.elapsedTime(end) / iters);
  }
  g.dispose();
  return median(times);
}

const rows = [];
function report(row) {
  rows.push(row);
  const f = (x, d = 1) => (x === undefined ? '' : x.toFixed(d));
  console.log(
    `| ${row.kernel} | ${row.shape} | ${f(row.us, 1)} | ${row.unit === 'GB/s' ? f(row.rate, 0) : f(row.rate, 1)} ${row.unit} | ${f(row.floor, 0)} | ${f(row.ratio, 2)} | ${row.target ?? ''} | ${row.verdict ?? ''} |`,
  );
}
const verdict = (ratio, target) => (ratio >= target ? 'PASS' : 'MISS');
/** BENCH_ONLY=<substring> runs only the sections whose name contains it (short device runs). */
const want = (name) => !process.env.BENCH_ONLY || name.includes(process.env.BENCH_ONLY);
/** Runs one bench section; a failure is reported and the next section still runs. */
async function section(name, fn) {
  if (!want(name)) return;
  try {
    await fn();
  } catch (e) {
    console.log(
      `# ${name} failed: ${String(e?.stack ?? e)
        .split('\n')
        .slice(0, 3)
        .join(' | ')}`,
    );
    rows.push({ kernel: name, error: String(e?.message ?? e) });
    try {
      freeAll();
    } catch {}
  }
}

console.log(`# @x/kernels GPU bench on ${gpuName}, ${new Date().toISOString()}`);
console.log('| kernel | shape | µs | rate | floor | ratio | target | |');
console.log('| --- | --- | ---: | ---: | ---: | ---: | --- | --- |');

// ---- the HBM floor ----
const GiB = 1 << 30;
const src = randomize(tensor('u8', [GiB]));
const dst = tensor('u8', [GiB]);
const copyMs = timeIt(() => s.copy(dst.ptr, src.ptr, GiB), 5);
const hbm = (2 * GiB) / (copyMs * 1e-3) / 1e9;
report({
  kernel: 'HBM copy (d2d, read+write)',
  shape: '1 GiB',
  us: copyMs * 1e3,
  rate: hbm,
  unit: 'GB/s',
  floor: hbm,
  ratio: 1,
});
freeAll();

function memBound(kernel, shape, bytes, ms, target = 0.8) {
  const rate = bytes / (ms * 1e-3) / 1e9;
  report({
    kernel,
    shape,
    us: ms * 1e3,
    rate,
    unit: 'GB/s',
    floor: hbm,
    ratio: rate / hbm,
    target: `≥ ${target}`,
    verdict: verdict(rate / hbm, target),
  });
}

// ---- row kernels (Llama-3.1-8B widths) ----
await section('rmsNorm', async () => {
  const [t, h] = [32768, 4096];
  const x = randomize(tensor('bf16', [t, h]));
  const res = randomize(tensor('bf16', [t, h]));
  const out = tensor('bf16', [t, h]);
  const w = randomize(tensor('bf16', [h], 'weights'));
  memBound(
    'rmsNorm + residual',
    `${t}×${h} bf16`,
    4 * t * h * 2,
    timeIt(() => rmsNorm(s, out, x, w, { eps: 1e-5, residual: res })),
  );
  memBound(
    'rmsNorm',
    `${t}×${h} bf16`,
    2 * t * h * 2,
    timeIt(() => rmsNorm(s, out, x, w, { eps: 1e-5 })),
  );
  freeAll();
});
await section('rotary', async () => {
  const [t, nq, nk, hd] = [32768, 32, 8, 128];
  const cs = await upload(
    'f32',
    [8192, hd],
    ropeCosSinCache({ rotaryDim: hd, theta: 500000, maxPositions: 8192 }),
    'weights',
  );
  const pos = await upload(
    'i32',
    [t],
    Int32Array.from({ length: t }, (_, i) => (i * 7919) % 8192),
  );
  const q = randomize(tensor('bf16', [t, nq * hd]));
  const k = randomize(tensor('bf16', [t, nk * hd]));
  const v = randomize(tensor('bf16', [t, nk * hd]));
  const rope = { headDim: hd, rotaryDim: hd, neox: true };
  memBound(
    'rotary (q, k in place)',
    `${t} tok, 32/8 heads`,
    2 * t * (nq + nk) * hd * 2,
    timeIt(() => rotaryEmbedding(s, pos, q, k, cs, rope)),
  );
  const kc = tensor('bf16', [t / 16, 16, nk, hd], 'kv_cache');
  const vc = tensor('bf16', [t / 16, 16, nk, hd], 'kv_cache');
  const slots = await upload(
    'i64',
    [t],
    BigInt64Array.from({ length: t }, (_, i) => BigInt(i)),
  );
  const cache = { v, kCache: kc, vCache: vc, slotMapping: slots };
  memBound(
    'rotary + KV write (fused)',
    `${t} tok`,
    (2 * t * nq * hd + 5 * t * nk * hd) * 2,
    timeIt(() => rotaryEmbedding(s, pos, q, k, cs, { ...rope, cache })),
  );
  memBound(
    'reshapeAndCache',
    `${t} tok, 8×128`,
    4 * t * nk * hd * 2,
    timeIt(() => reshapeAndCache(s, k, v, kc, vc, slots)),
  );
  freeAll();
});
await section('silu/embedding', async () => {
  const [t, i] = [16384, 14336];
  const x = randomize(tensor('bf16', [t, 2 * i]));
  const out = tensor('bf16', [t, i]);
  memBound(
    'siluAndMul',
    `${t}×${i} bf16`,
    3 * t * i * 2,
    timeIt(() => siluAndMul(s, out, x)),
  );
  const [v, h] = [128256, 4096];
  const table = randomize(tensor('bf16', [v, h], 'weights'));
  const ids = await upload(
    'i32',
    [t],
    Int32Array.from({ length: t }, (_, j) => (j * 104729) % v),
  );
  const eo = tensor('bf16', [t, h]);
  memBound(
    'embedding',
    `${t} of ${v}×${h}`,
    2 * t * h * 2,
    timeIt(() => embedding(s, eo, table, ids)),
  );
  freeAll();
});

// ---- decode attention ----
// `plannedCtx` > ctx plans the splits for a longer context than the call has (as the engine's
// captured decode graphs do); `graph` times back-to-back calls in a CUDA graph (latency: PDL edges,
// no launch overhead) instead of eager launches.
async function decodeCase(
  batch,
  ctx,
  { nq = 32, nk = 8, hd = 128, bs = 16, target = 0.8, plannedCtx = ctx, graph = false } = {},
) {
  const maxBlocks = Math.ceil(plannedCtx / bs);
  const numBlocks = batch * maxBlocks;
  const kc = randomize(tensor('bf16', [numBlocks, bs, nk, hd], 'kv_cache'));
  const vc = randomize(tensor('bf16', [numBlocks, bs, nk, hd], 'kv_cache'));
  const q = randomize(tensor('bf16', [batch, nq * hd]));
  const out = tensor('bf16', [batch, nq * hd]);
  // Blocks interleaved across sequences (a pool hands them out in arrival order).
  const table = Int32Array.from(
    { length: batch * maxBlocks },
    (_, i) => (i % maxBlocks) * batch + Math.floor(i / maxBlocks),
  );
  const meta = {
    blockTables: await upload('i32', [batch, maxBlocks], table),
    seqLens: await upload('i32', [batch], new Int32Array(batch).fill(ctx)),
    queryStartLoc: await upload(
      'i32',
      [batch + 1],
      Int32Array.from({ length: batch + 1 }, (_, i) => i),
    ),
    scale: 1 / Math.sqrt(hd),
  };
  const wsBytes = pagedAttentionWorkspaceBytes(DEV, {
    numHeads: nq,
    numKvHeads: nk,
    headDim: hd,
    blockSize: bs,
    maxBlocks,
    maxTokens: batch,
  });
  const ws = tensor('u8', [Math.max(256, wsBytes)]);
  const bytes = 2 * batch * ctx * nk * hd * 2 + 2 * batch * nq * hd * 2;
  const call = () => pagedAttention(s, out, q, kc, vc, { ...meta, workspace: ws });
  memBound(
    graph ? 'decode attention (graph)' : 'decode attention',
    `${batch}×${ctx} ctx${plannedCtx > ctx ? ` (planned ${plannedCtx})` : ''}, 32/8 heads`,
    bytes,
    graph ? timeGraph(call, 20) : timeIt(call, 20),
    target,
  );
  freeAll();
}
await section('decode 64x2k', () => decodeCase(64, 2048));
await section('decode 256x2k', () => decodeCase(256, 2048));
await section('decode 8x32k', () => decodeCase(8, 32768));
await section('decode 1x4k', () => decodeCase(1, 4096, { target: 0 }));
// The engine's batch-1 decode step (context ~300 in a graph planned for 1088): latency, not bandwidth.
await section('decode 1x296 graph', () =>
  decodeCase(1, 296, { target: 0, plannedCtx: 1088, graph: true }),
);

// ---- GEMMs: tensor-core ceiling, then Llama-3.1-8B shapes vs torch.matmul ----
let gemmWs = tensor('u8', [MATMUL_WORKSPACE_BYTES], 'meta');
function gemmTime(m, n, k, copies, { fused = false } = {}) {
  const a = randomize(tensor('bf16', [m, k]));
  const ws = Array.from({ length: copies }, () => randomize(tensor('bf16', [n, k], 'weights')));
  const out = tensor('bf16', [m, n]);
  const flops = 2 * m * n * k;
  const iters = Math.max(
    3,
    Math.min(200, Math.floor(20e-3 / Math.max(flops / 700e12, (n * k * 2) / 4.0e12))),
  );
  const call = fused
    ? (i) => fusedLinear(s, out, a, ws[i % copies])
    : (i) => matmul(s, out, a, ws[i % copies], { workspace: gemmWs });
  const ms = timeGraph(call, iters);
  for (const t of [a, out, ...ws]) {
    const i = live.findIndex((x) => x.ptr === t.ptr);
    alloc.free(live.splice(i, 1)[0]);
  }
  return ms;
}
let peakMs = Number.NaN;
try {
  peakMs = gemmTime(8192, 8192, 8192, 1);
} catch (e) {
  console.log(`# matmul 8192³ failed: ${String(e?.message ?? e)}`);
}
const peak = (2 * 8192 ** 3) / (peakMs * 1e-3) / 1e12;
report({
  kernel: 'matmul (tensor-core ceiling)',
  shape: '8192³ bf16',
  us: peakMs * 1e3,
  rate: peak,
  unit: 'TFLOP/s',
});

const shapes = [];
const llama = [
  ['qkv', 6144, 4096],
  ['o', 4096, 4096],
  ['gate_up', 28672, 4096],
  ['down', 4096, 14336],
  ['lm_head', 128256, 4096],
];
for (const m of want('matmul') ? [1, 32, 128, 512, 4096] : [])
  for (const [name, n, k] of llama)
    shapes.push({ name, m, n, k, copies: n * k * 2 < 100e6 ? 4 : 1 });
let torch = null;
if (shapes.length > 0)
  try {
    const cfg = {
      shapes: shapes.map((x) => [x.m, x.n, x.k]),
      copies: Object.fromEntries(shapes.map((x) => [`${x.m},${x.n},${x.k}`, x.copies])),
    };
    const outText = execFileSync('python3', [join(here, 'torch_matmul.py'), JSON.stringify(cfg)], {
      encoding: 'utf8',
      timeout: 240_000,
    });
    torch = JSON.parse(outText.trim().split('\n').at(-1));
  } catch (e) {
    console.log(`# torch side failed: ${String(e.message ?? e).split('\n')[0]}`);
  }
for (const x of shapes) {
  let ms;
  try {
    ms = gemmTime(x.m, x.n, x.k, x.copies);
  } catch (e) {
    console.log(`# matmul ${x.name} M ${x.m} failed: ${String(e?.message ?? e)}`);
    continue;
  }
  const tms = torch?.ms[`${x.m},${x.n},${x.k}`];
  const ratio = tms === undefined ? undefined : tms / ms;
  const floorUs =
    Math.max(
      (2 * x.m * x.n * x.k) / (peak * 1e12),
      (x.n * x.k * 2 + x.m * (x.n + x.k) * 2) / (hbm * 1e9),
    ) * 1e6;
  report({
    kernel: `matmul ${x.name}`,
    shape: `M ${x.m}, N ${x.n}, K ${x.k}`,
    us: ms * 1e3,
    rate: (2 * x.m * x.n * x.k) / (ms * 1e-3) / 1e12,
    unit: 'TFLOP/s',
    floor: floorUs,
    ratio,
    target: '≥ 0.95 × torch',
    verdict: ratio === undefined ? 'n/a' : verdict(ratio, 0.95),
    torchUs: tms === undefined ? undefined : tms * 1e3,
  });
}
freeAll();

// ---- small-batch linear layers: fusedLinear (the weight stream) vs cuBLASLt at decode sizes ----
await section('fusedLinear', async () => {
  // BENCH_FUSED_ROWS=1,2 narrows the row counts (short device runs).
  const rowsList = (process.env.BENCH_FUSED_ROWS ?? '1,2,4').split(',').map(Number);
  // The GEMM section's freeAll() released the cuBLASLt workspace: a fresh one for the comparisons.
  gemmWs = tensor('u8', [MATMUL_WORKSPACE_BYTES], 'meta');
  // BENCH_FUSED_SHAPES="name:NxK,..." replaces the Llama shapes (e.g. one k at growing n: the
  // intercept of time against bytes is what a call costs beyond its weight stream).
  const fusedShapes = process.env.BENCH_FUSED_SHAPES
    ? process.env.BENCH_FUSED_SHAPES.split(',').map((x) => {
        const [name, dims = ''] = x.split(':');
        const [n, k] = dims.split('x').map(Number);
        if (!name || !(n > 0 && Number.isInteger(n)) || !(k > 0 && k % 8 === 0)) {
          throw new Error(`BENCH_FUSED_SHAPES: expected name:NxK (K a multiple of 8), got "${x}"`);
        }
        return [name, n, k];
      })
    : llama;
  for (const m of rowsList) {
    for (const [name, n, k] of fusedShapes) {
      // BENCH_FUSED_COPIES=1: the same weights every call (L2-resident when they fit).
      const copies = Math.max(
        1,
        Math.floor(Number(process.env.BENCH_FUSED_COPIES ?? (n * k * 2 < 100e6 ? 4 : 1))) || 1,
      );
      const fms = gemmTime(m, n, k, copies, { fused: true });
      const cms = gemmTime(m, n, k, copies);
      const bytes = n * k * 2;
      report({
        kernel: `fusedLinear ${name}`,
        shape: `M ${m}, N ${n}, K ${k} (cuBLASLt ${(cms * 1e3).toFixed(1)} µs)`,
        us: fms * 1e3,
        rate: bytes / (fms * 1e-3) / 1e9,
        unit: 'GB/s',
        floor: hbm,
        ratio: bytes / (fms * 1e-3) / 1e9 / hbm,
        target: `≥ cuBLASLt (${(bytes / (cms * 1e-3) / 1e9 / hbm).toFixed(2)} of copy)`,
        verdict: fms <= cms ? 'PASS' : 'MISS',
      });
    }
  }
  freeAll();
});

// ---- prefill attention throughput ----
async function prefillCase(seqs, len, { nq = 32, nk = 8, hd = 128, bs = 16 } = {}) {
  const maxBlocks = Math.ceil(len / bs);
  const tokens = seqs * len;
  const kc = randomize(tensor('bf16', [seqs * maxBlocks, bs, nk, hd], 'kv_cache'));
  const vc = randomize(tensor('bf16', [seqs * maxBlocks, bs, nk, hd], 'kv_cache'));
  const q = randomize(tensor('bf16', [tokens, nq * hd]));
  const out = tensor('bf16', [tokens, nq * hd]);
  const meta = {
    blockTables: await upload(
      'i32',
      [seqs, maxBlocks],
      Int32Array.from({ length: seqs * maxBlocks }, (_, i) => i),
    ),
    seqLens: await upload('i32', [seqs], new Int32Array(seqs).fill(len)),
    queryStartLoc: await upload(
      'i32',
      [seqs + 1],
      Int32Array.from({ length: seqs + 1 }, (_, i) => i * len),
    ),
    scale: 1 / Math.sqrt(hd),
  };
  const ms = timeIt(() => pagedAttention(s, out, q, kc, vc, meta), 5);
  const flops = seqs * 4 * hd * nq * ((len * (len + 1)) / 2);
  const rate = flops / (ms * 1e-3) / 1e12;
  report({
    kernel: 'prefill attention (causal)',
    shape: `${seqs}×${len} tok, 32/8 heads`,
    us: ms * 1e3,
    rate,
    unit: 'TFLOP/s',
    floor: peak,
    ratio: rate / peak,
    target: 'reported',
  });
  freeAll();
}
await section('prefill 4x1024', () => prefillCase(4, 1024));
await section('prefill 1x8192', () => prefillCase(1, 8192));

// ---- sampling ----
await section('sample', async () => {
  const [b, v] = [64, 128256];
  const logits = tensor('f32', [b, v]);
  const h = HostBuffer.alloc(b * v * 4, { device: DEV });
  const f = new Float32Array(h.buffer);
  let x = 7;
  for (let i = 0; i < f.length; i++) {
    x = (x * 1664525 + 1013904223) >>> 0;
    f[i] = (x / 2 ** 32) * 12 - 6;
  }
  s.copy(logits.ptr, h.ptr, b * v * 4);
  const ws = tensor('u8', [sampleWorkspaceBytes(b, v)]);
  const sampled = tensor('i32', [b]);
  const cases = [
    ['greedy', { temperature: 0 }],
    ['temperature + top-p 0.9', { temperature: 0.7, topP: 0.9, seed: 1 }],
    [
      'top-k 50 + top-p + penalties',
      {
        temperature: 0.8,
        topK: 50,
        topP: 0.95,
        repetitionPenalty: 1.1,
        frequencyPenalty: 0.2,
        outputTokenIds: Array.from({ length: 256 }, (_, i) => i * 13),
        seed: 2,
      },
    ],
  ];
  for (const [name, row] of cases) {
    const rowsArr = Array.from({ length: b }, (_, i) => ({ ...row, step: i }));
    const ms = timeIt(() => sample(s, logits, rowsArr, { sampled }, { workspace: ws }), 5);
    report({
      kernel: `sample: ${name}`,
      shape: `${b}×${v} f32`,
      us: ms * 1e3,
      rate: (b * v * 4) / (ms * 1e-3) / 1e9,
      unit: 'GB/s',
      target: 'reported',
    });
  }
  h.dispose();
  freeAll();
});

// ---- a step's staged inputs up, with fed-back ids: SM copy vs copy engine ----
// Each call follows a small kernel (as the upload follows the sampler), so the copy engine's
// hand-offs with kernels count; the floor is the copy engine's own rate for 32 MiB.
await section('staged upload', async () => {
  const big = 32 << 20;
  const host = HostBuffer.alloc(big, { device: DEV });
  new Uint8Array(host.buffer).fill(7);
  const dev = tensor('u8', [big]);
  const fed = tensor('i32', [256]);
  const scratch = tensor('i32', [256]);
  const linkMs = timeIt(() => s.copy(dev.ptr, host.ptr, big), 3);
  const link = big / (linkMs * 1e-3) / 1e9;
  const before = () => indexCopy(s, scratch, [0], fed, [1]);
  for (const bytes of [2048, 65536, 1 << 20, 8 << 20]) {
    const d = dev.slice(0, 0, bytes);
    const h = host.tensor('u8', [bytes]);
    const ids = d.view('i32').slice(0, 0, 16);
    const index = { dst: ids, dstIndex: [3], src: fed, srcIndex: [5] };
    const sm = timeIt(() => {
      before();
      copyWithIndexCopy(s, d, h, index);
    }, 20);
    const ce = timeIt(() => {
      before();
      s.copy(d.ptr, h.ptr, bytes);
      indexCopy(s, ids, [3], fed, [5]);
    }, 20);
    for (const [name, ms] of [
      ['staged upload: one kernel (copyWithIndexCopy)', sm],
      ['staged upload: copy engine + indexCopy', ce],
    ]) {
      report({
        kernel: name,
        shape: `${bytes >= 1 << 20 ? `${bytes >> 20} MiB` : `${bytes >> 10} KiB`} after a kernel`,
        us: ms * 1e3,
        rate: bytes / (ms * 1e-3) / 1e9,
        unit: 'GB/s',
        floor: link,
        ratio: bytes / (ms * 1e-3) / 1e9 / link,
        target: 'reported',
      });
    }
  }
  host.dispose();
  freeAll();
});

if (process.env.OUT) {
  const file = join(process.env.OUT, 'bench-kernels.json');
  writeFileSync(
    file,
    JSON.stringify(
      {
        gpu: gpuName,
        date: new Date().toISOString(),
        hbmGBs: hbm,
        gemmPeakTflops: peak,
        torch: torch?.torch,
        rows,
      },
      null,
      1,
    ),
  );
  console.log(`# wrote ${file}`);
}
noise.dispose();
await alloc.dispose();
