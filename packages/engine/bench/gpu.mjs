#!/usr/bin/env node
// `pnpm bench:gpu-engine`: the GPU forward of @x/engine on a Llama-3.1-8B-shaped model with random
// bf16 weights built on the device (no download), against floors measured in the same run:
//   - HBM copy bandwidth (1 GiB device-to-device, read + write counted) → the weight-streaming
//     floor of a decode step (weight bytes ÷ bandwidth);
//   - bf16 GEMM peak (8192³ through x's cuBLASLt matmul, graph replays) → prefill's ceiling;
//   - decode at batch 1, 64, 128 (context 256 → 256 + steps): end to end, synchronous
//     (ModelRunner.execute awaited each step: upload, graph replay, greedy sampling on the GPU,
//     sampled ids back, the next step built from them) and pipelined (step k+1 enqueued before
//     step k's ids are read, its tokens fed back on the device: SequenceStep.feedback; two steps in
//     flight, as the serving Worker runs them); the graph replay alone (CUDA events around
//     back-to-back replays), also unfused (cuBLASLt GEMMs and separate row kernels);
//   - prefill of 4 × 1024 tokens in TFLOP/s against the GEMM peak;
//   - transformers eager on the same shapes (bench/hf_eager.py, run before this script by
//     scripts/gpu-check.sh, read from $OUT/hf-eager.json when present).
// Prints tables; with $OUT writes $OUT/bench-engine.json. Bundled by test/gpu/bundle.mjs
// (dist-gpu/bench-gpu.mjs); exits 0 whenever it could measure (it reports, it does not judge).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { CudaGraph, devices, Event, HostBuffer, Stream, Tensor } from '@x/core';
import { Allocator } from '@x/cumem';
import {
  FUSED_LINEAR_MAX_ROWS,
  fusedLinear,
  MATMUL_WORKSPACE_BYTES,
  matmul,
  pagedAttentionWorkspaceBytes,
  ropeCosSinCache,
} from '@x/kernels';
import { ModelRunner } from '../src/model-runner.ts';
import { stageInputs } from '../src/models/step-inputs.ts';
import { Workspace } from '../src/models/workspace.ts';
import { buildWeights, LLAMA_8B } from './gpu-weights.mjs';

const DEV = 'cuda:0';
const OUT = process.env.OUT;
const gpu = devices().find((d) => d.device === DEV);
const alloc = await Allocator.create({ device: DEV });
const s = Stream.create(DEV);
alloc.registerStream(s);
const t0 = Event.create(DEV, { timing: true });
const t1 = Event.create(DEV, { timing: true });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const result = { gpu: gpu?.name, date: new Date().toISOString(), commit: commit() };

function commit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return process.env.X_COMMIT ?? 'unknown';
  }
}

/** Median ms of one `fn` (enqueued `iters` times between two events; 5 repetitions). */
function timeEvents(fn, iters) {
  fn();
  const times = [];
  for (let r = 0; r < 5; r++) {
    t0.record(s);
    for (let i = 0; i < iters; i++) fn();
    t1.record(s);
    t1.synchronizeSync();
    times.push(t0.elapsedTime(t1) / iters);
  }
  return median(times);
}

// ---- floors
const COPY = 1 << 30;
const src = alloc.alloc(COPY, { tag: 'activations', owner: 'bench.copy.src' });
const dst = alloc.alloc(COPY, { tag: 'activations', owner: 'bench.copy.dst' });
s.fill(src.ptr, COPY, 0x3c003c00n, 4);
const copyMs = timeEvents(() => s.copy(dst.ptr, src.ptr, COPY), 10);
const hbm = (2 * COPY) / (copyMs / 1e3); // bytes/s, read + write
alloc.free(src);
alloc.free(dst);
result.hbmCopyBytesPerSec = hbm;

// ---- the model
const config = LLAMA_8B;
const weights = await buildWeights(alloc, s, config);
const gemmWs = alloc.alloc(MATMUL_WORKSPACE_BYTES, { tag: 'activations', owner: 'bench.gemm.ws' });
const ws32 = gemmWs.tensor('u8', [MATMUL_WORKSPACE_BYTES]);
/** Fills `bytes` at `dst` with random bf16 tiled from `from` (a random weight). */
function tile(dst, bytes, from) {
  for (let off = 0; off < bytes; off += from.byteLength) {
    s.copy(dst + BigInt(off), from.ptr, Math.min(from.byteLength, bytes - off));
  }
}
{
  const N = 8192;
  const bytes = N * N * 2;
  const [a, w, o] = [0, 1, 2].map((i) =>
    alloc.alloc(bytes, { tag: 'activations', owner: `g${i}` }),
  );
  tile(a.ptr, bytes, weights.get('model.embed_tokens.weight'));
  tile(w.ptr, bytes, weights.get('lm_head.weight'));
  const [A, W, O] = [a, w, o].map((m) => m.tensor('bf16', [N, N]));
  // Eagerly first: a device's first kernel call loads modules and allocates (not capturable).
  matmul(s, O, A, W, { workspace: ws32 });
  s.synchronizeSync();
  const iters = 10;
  const g = CudaGraph.capture(s, () => {
    for (let i = 0; i < iters; i++) matmul(s, O, A, W, { workspace: ws32 });
  });
  const ms = timeEvents(() => g.launch(s), 1) / iters;
  g.dispose();
  result.gemmPeakFlops = (2 * N ** 3) / (ms / 1e3);
  for (const m of [a, w, o]) alloc.free(m);
}

const MAX_LEN = 1088;
const PER_SEQ = MAX_LEN / 16;
const runner = await ModelRunner.create({
  config,
  weights,
  allocator: alloc,
  stream: s,
  numKvBlocks: 128 * PER_SEQ,
  blockSize: 16,
  maxModelLen: MAX_LEN,
  maxNumSeqs: 128,
});
const weightBytes = runner.model.weightBytes();
result.weightBytes = weightBytes;
result.floorMs = (weightBytes / hbm) * 1e3;
// KV cache: random values, so attention reads real data (a sequence's blocks are its own).
for (const t of [...runner.kvCache.keys, ...runner.kvCache.values]) {
  tile(t.ptr, t.byteLength, weights.get('model.embed_tokens.weight'));
}
await s.synchronize();

const kvBytesPerToken = config.numLayers * 2 * config.numKvHeads * config.headDim * 2;
const CTX = 256;

async function decode(b, steps) {
  const syncIds = [];
  const seqs = Array.from({ length: b }, (_, i) => ({
    blockTable: Array.from({ length: PER_SEQ }, (_, j) => i * PER_SEQ + j),
  }));
  let ids = seqs.map((_, i) => (i * 7919) % config.vocabSize);
  const rows = seqs.map(() => ({ temperature: 0 }));
  const times = [];
  for (let k = 0; k < steps + 3; k++) {
    const batch = seqs.map((q, i) => ({
      tokens: [ids[i]],
      blockTable: q.blockTable,
      contextLength: CTX + k + 1,
    }));
    const start = performance.now();
    const r = await runner.execute(batch, { sample: { rows } });
    if (k >= 3) times.push(performance.now() - start);
    ids = [...r.sampled.tokenIds];
    syncIds.push(ids.join(','));
  }
  const e2e = median(times);
  const gpuMs = replayMs(b, CTX + steps);
  const kvBytes = b * (CTX + steps / 2) * kvBytesPerToken;
  const floorMs = ((weightBytes + kvBytes) / hbm) * 1e3;
  return {
    batch: b,
    context: `${CTX + 1}..${CTX + steps + 3}`,
    stepMs: e2e,
    replayMs: gpuMs,
    tokPerSec: (b / e2e) * 1e3,
    floorMs,
    ratio: e2e / floorMs,
    weightsOnlyRatio: e2e / result.floorMs,
    syncIds,
  };
}

// Pipelined decode: step k+1 is enqueued before step k's ids are read (its tokens fed back from
// step k's rows on the device), and step k is awaited only after, so two steps are in flight —
// what the serving Worker does. Steady-state step time: the median interval between consecutive
// steps' results (and the mean over the measured window), after 3 warm-up steps.
async function decodePipelined(b, steps, into, syncIds) {
  const seqs = Array.from({ length: b }, (_, i) => ({
    blockTable: Array.from({ length: PER_SEQ }, (_, j) => i * PER_SEQ + j),
  }));
  const rows = seqs.map(() => ({ temperature: 0 }));
  const total = steps + 3;
  const done = [];
  const results = [];
  let prev;
  for (let k = 0; k < total; k++) {
    const batch = seqs.map((q, i) => ({
      ...(k === 0 ? { tokens: [(i * 7919) % config.vocabSize] } : { tokens: [], feedback: i }),
      blockTable: q.blockTable,
      contextLength: CTX + k + 1,
    }));
    const r = runner.execute(batch, { sample: { rows } });
    results.push(
      r.then((x) => {
        done[k] = performance.now();
        return x;
      }),
    );
    if (prev !== undefined) await prev;
    prev = results[k];
  }
  await prev;
  const ids = (await Promise.all(results)).map((x) => [...x.sampled.tokenIds].join(','));
  // Same inputs, same cache writes as the synchronous run: the same ids, step for step.
  into.pipelinedMatchesSync =
    ids.length === syncIds.length && ids.every((x, k) => x === syncIds[k]);
  const gaps = [];
  for (let k = 4; k < total; k++) gaps.push(done[k] - done[k - 1]);
  const ms = median(gaps);
  into.pipelinedStepMs = ms;
  into.pipelinedMeanMs = (done[total - 1] - done[3]) / (total - 4);
  into.pipelinedTokPerSec = (b / ms) * 1e3;
  into.pipelinedRatio = ms / into.floorMs;
  into.pipelinedWeightsOnlyRatio = ms / result.floorMs;
  into.replayUnfusedMs = replayMs(b, CTX + steps, { fused: false });
}

// The decode forward of bucket `b` captured over a workspace of its own and replayed back to back
// (GPU time alone: no upload, sampling or host round trip), as the runner runs it: at most
// FUSED_LINEAR_MAX_ROWS tokens through fusedLinear; `fused: false` runs the separate ops
// (cuBLASLt GEMMs, RMSNorm, rotary + KV write, SiLU-and-mul kernels) instead, to compare.
function replayMs(b, ctx, { fused = true, counters = false } = {}) {
  const c = config;
  const w = new Workspace(alloc, {
    tokens: b,
    seqs: b,
    maxBlocksPerSeq: PER_SEQ,
    hidden: c.hiddenSize,
    qWidth: c.numHeads * c.headDim,
    kvWidth: c.numKvHeads * c.headDim,
    intermediate: c.intermediateSize,
    vocab: c.vocabSize,
    dtype: 'bf16',
  });
  const table = ropeCosSinCache({
    rotaryDim: c.headDim,
    theta: c.ropeTheta,
    maxPositions: MAX_LEN,
    scaling: c.ropeScaling,
  });
  const rope = alloc.alloc(table.byteLength, { tag: 'meta', owner: 'bench.rope' });
  const host = HostBuffer.alloc(table.byteLength, { device: DEV });
  new Float32Array(host.buffer).set(table);
  s.copy(rope.ptr, host.ptr, table.byteLength);
  const attnBytes = pagedAttentionWorkspaceBytes(DEV, {
    numHeads: c.numHeads,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    blockSize: 16,
    maxBlocks: PER_SEQ,
    maxTokens: b,
  });
  const attn = alloc.alloc(Math.max(256, attnBytes), { tag: 'activations', owner: 'bench.attn' });
  const cnt = alloc.alloc(b * c.numHeads * 4, { tag: 'meta', owner: 'bench.attn.counters' });
  s.fill(cnt.ptr, b * c.numHeads * 4, 0, 4);
  const batch = Array.from({ length: b }, (_, i) => ({
    tokens: [(i * 31) % c.vocabSize],
    blockTable: Array.from({ length: PER_SEQ }, (_, j) => i * PER_SEQ + j),
    contextLength: ctx,
  }));
  stageInputs(w, batch, 16);
  w.upload(s);
  const cosSin = rope.tensor('f32', [MAX_LEN, c.headDim]);
  const fwd = {
    matmulWorkspace: ws32,
    attentionWorkspace: attn.tensor('u8', [Math.max(256, attnBytes)]),
    fusedSmallBatch: fused,
    ...(counters ? { attentionCounters: cnt.tensor('i32', [b * c.numHeads]) } : {}),
    decode: true,
  };
  const record = () =>
    runner.model.forward(s, w, runner.kvCache, cosSin, { tokens: b, seqs: b }, undefined, fwd);
  record();
  s.synchronizeSync();
  const g = CudaGraph.capture(s, record);
  const ms = timeEvents(() => g.launch(s), 10);
  s.synchronizeSync();
  g.dispose();
  w.dispose();
  alloc.free(rope);
  alloc.free(attn);
  alloc.free(cnt);
  host.dispose();
  return ms;
}

async function prefill(seqs, len) {
  const batch = Array.from({ length: seqs }, (_, i) => ({
    tokens: Array.from({ length: len }, (_, j) => (i * 1009 + j * 7) % config.vocabSize),
    blockTable: Array.from({ length: PER_SEQ }, (_, j) => i * PER_SEQ + j),
    contextLength: len,
  }));
  const times = [];
  for (let k = 0; k < 7; k++) {
    const start = performance.now();
    await runner.execute(batch, { sample: { rows: batch.map(() => ({ temperature: 0 })) } });
    if (k >= 2) times.push(performance.now() - start);
  }
  const ms = median(times);
  const c = config;
  const h = c.hiddenSize;
  const perLayer =
    h * (c.numHeads + 2 * c.numKvHeads) * c.headDim +
    c.numHeads * c.headDim * h +
    3 * h * c.intermediateSize;
  const tokens = seqs * len;
  const linear = 2 * tokens * perLayer * c.numLayers + 2 * seqs * h * c.vocabSize;
  const attention = seqs * c.numLayers * 4 * c.headDim * c.numHeads * ((len * (len + 1)) / 2);
  const flops = linear + attention;
  return {
    seqs,
    len,
    ms,
    tflops: flops / (ms / 1e3) / 1e12,
    ofPeak: flops / (ms / 1e3) / result.gemmPeakFlops,
  };
}

// The GEMMs of one decode step alone (every layer's qkv, o, gate_up, down, then lm_head, at M = b),
// captured and replayed back to back: how much of a step the weight-streaming GEMMs take (cuBLASLt,
// or with `fused` the plain fusedLinear kernel: the weight stream alone).
function gemmsOnlyMs(b, { fused = false } = {}) {
  const c = config;
  const widest = Math.max(c.vocabSize, 2 * c.intermediateSize);
  const x = alloc.alloc(b * c.intermediateSize * 2, { tag: 'activations', owner: 'bench.x' });
  const y = alloc.alloc(b * widest * 4, { tag: 'activations', owner: 'bench.y' });
  tile(x.ptr, b * c.intermediateSize * 2, weights.get('model.embed_tokens.weight'));
  // q/k/v and gate/up lie back to back (gpu-weights.mjs), so each pair runs as one GEMM.
  const w = (name) => weights.get(name).ptr;
  const calls = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}`;
    calls.push([
      (c.numHeads + 2 * c.numKvHeads) * c.headDim,
      c.hiddenSize,
      w(`${p}.self_attn.q_proj.weight`),
    ]);
    calls.push([c.hiddenSize, c.numHeads * c.headDim, w(`${p}.self_attn.o_proj.weight`)]);
    calls.push([2 * c.intermediateSize, c.hiddenSize, w(`${p}.mlp.gate_proj.weight`)]);
    calls.push([c.hiddenSize, c.intermediateSize, w(`${p}.mlp.down_proj.weight`)]);
  }
  calls.push([c.vocabSize, c.hiddenSize, w('lm_head.weight')]);
  const tensors = calls.map(([n, k, ptr]) => ({
    a: x.tensor('bf16', [b, k]),
    w: new Tensor({ ptr, dtype: 'bf16', shape: [n, k], device: DEV }),
    o: y.tensor(n === c.vocabSize ? 'f32' : 'bf16', [b, n]),
  }));
  const all = () => {
    for (const t of tensors) {
      if (fused) fusedLinear(s, t.o, t.a, t.w);
      else matmul(s, t.o, t.a, t.w, { workspace: ws32 });
    }
  };
  all();
  s.synchronizeSync();
  const g = CudaGraph.capture(s, all);
  const ms = timeEvents(() => g.launch(s), 5);
  s.synchronizeSync();
  g.dispose();
  alloc.free(x);
  alloc.free(y);
  return ms;
}

/** Runs one bench section; a failure is recorded and the others still run. */
async function section(name, fn) {
  try {
    return await fn();
  } catch (err) {
    console.error(`bench section ${name} failed:`, err);
    result.errors = [...(result.errors ?? []), { section: name, error: String(err?.stack ?? err) }];
    return undefined;
  }
}

if (process.env.BENCH_PROFILE === '1') {
  // A quick comparison (short device runs, tuning knobs in the environment): only the batch-1
  // decode graph's replay, fused, unfused, and fused with split-KV merged by the last split, then
  // the fused linear layers alone (a kernel timeline of each: tools/cupti-trace).
  console.log(`profile: replay ${replayMs(1, CTX + 40).toFixed(3)} ms fused`);
  console.log(`profile: replay ${replayMs(1, CTX + 40, { fused: false }).toFixed(3)} ms unfused`);
  const merged = replayMs(1, CTX + 40, { counters: true });
  console.log(`profile: replay ${merged.toFixed(3)} ms fused, split-KV merged by the last split`);
  // BENCH_PROFILE_BATCHES=64,128 adds those batches' fused replays, combine kernel vs last split.
  for (const b of (process.env.BENCH_PROFILE_BATCHES ?? '')
    .split(',')
    .filter(Boolean)
    .map(Number)) {
    const [comb, last] = [replayMs(b, CTX + 40), replayMs(b, CTX + 40, { counters: true })];
    console.log(
      `profile: batch ${b} replay ${comb.toFixed(3)} ms fused, ${last.toFixed(3)} ms merged by the last split`,
    );
  }
  const linears = gemmsOnlyMs(1, { fused: true });
  console.log(`profile: linear layers alone ${linears.toFixed(3)} ms fused`);
  process.exit(0);
}

result.decode = [];
// BENCH_DECODE_BATCHES=1,4 picks the batch sizes (default 1,64,128); BENCH_SKIP_PREFILL=1 skips
// prefill; BENCH_PROFILE=1 only compares batch-1 replays (short device runs; BENCH_PROFILE_BATCHES=
// 64,128 adds those batches, combine kernel against the last-split merge).
const batches = (process.env.BENCH_DECODE_BATCHES ?? '1,64,128').split(',').map(Number);
for (const [b, steps] of [
  [1, 40],
  [4, 20],
  [64, 20],
  [128, 20],
].filter(([b]) => batches.includes(b))) {
  const d = await section(`decode ${b}`, () => decode(b, steps));
  if (d) {
    const { syncIds } = d;
    delete d.syncIds;
    await section(`pipelined decode ${b}`, () => decodePipelined(b, steps, d, syncIds));
    d.gemmsOnlyMs = await section(`gemms ${b}`, () => gemmsOnlyMs(b));
    if (b <= FUSED_LINEAR_MAX_ROWS) {
      d.fusedLinearsOnlyMs = await section(`fused linears ${b}`, () =>
        gemmsOnlyMs(b, { fused: true }),
      );
    }
    result.decode.push(d);
  }
}
result.prefill =
  process.env.BENCH_SKIP_PREFILL === '1'
    ? {}
    : ((await section('prefill', () => prefill(4, 1024))) ?? {});
result.graphs = runner.graphCount;
const hfFile = OUT ? `${OUT}/hf-eager.json` : undefined;
result.transformers =
  hfFile && existsSync(hfFile) ? JSON.parse(readFileSync(hfFile, 'utf8')) : null;

await runner.dispose();
weights.dispose();
alloc.free(gemmWs);
await alloc.dispose();

const f = (x, d = 2) => (x === undefined || x === null ? '—' : Number(x).toFixed(d));
console.log(`\n# @x/engine GPU forward — ${result.gpu}, ${result.date}, commit ${result.commit}`);
console.log(
  `HBM copy ${f(hbm / 1e12)} TB/s · bf16 GEMM 8192³ ${f(result.gemmPeakFlops / 1e12, 0)} TFLOP/s · ` +
    `weights ${f(weightBytes / 1e9)} GB/step → floor ${f(result.floorMs, 3)} ms`,
);
console.log(
  '\n| decode batch | context | step ms sync (e2e) | step ms pipelined | graph replay ms | replay, unfused ms | linear layers alone ms (fusedLinear / cuBLASLt) | tok/s sync / pipelined | floor ms (weights+KV) | ratio sync / pipelined | pipelined ÷ weights-only floor |',
);
console.log('| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const d of result.decode) {
  console.log(
    `| ${d.batch} | ${d.context} | ${f(d.stepMs, 3)} | ${f(d.pipelinedStepMs, 3)} (mean ${f(d.pipelinedMeanMs, 3)}) | ${f(d.replayMs, 3)} | ${f(d.replayUnfusedMs, 3)} | ${f(d.fusedLinearsOnlyMs, 3)} / ${f(d.gemmsOnlyMs, 3)} | ${f(d.tokPerSec, 0)} / ${f(d.pipelinedTokPerSec, 0)} | ${f(d.floorMs, 3)} | ${f(d.ratio)}× / ${f(d.pipelinedRatio)}× | ${f(d.pipelinedWeightsOnlyRatio)}× |`,
  );
}
const p = result.prefill;
console.log('\n| prefill | ms | TFLOP/s | of GEMM peak |');
console.log('| --- | ---: | ---: | ---: |');
console.log(
  `| ${p.seqs} × ${p.len} | ${f(p.ms, 1)} | ${f(p.tflops, 0)} | ${f(p.ofPeak * 100, 1)}% |`,
);
const same = result.decode.map((d) => `batch ${d.batch}: ${d.pipelinedMatchesSync}`).join(', ');
console.log(`pipelined ids = synchronous ids, every step: ${same}`);
const hf = result.transformers;
console.log('\n| tok/s | x sync | x pipelined | transformers eager | x pipelined / transformers |');
console.log('| --- | ---: | ---: | ---: | ---: |');
for (const b of [1, 128]) {
  const d = result.decode.find((e) => e.batch === b);
  const x = d?.pipelinedTokPerSec;
  const t = hf?.decode?.find((e) => e.batch === b)?.tokPerSec;
  console.log(
    `| batch ${b} | ${f(d?.tokPerSec, 0)} | ${f(x, 0)} | ${f(t, 1)} | ${t && x ? `${f(x / t, 1)}×` : '—'} |`,
  );
}
if (OUT) writeFileSync(`${OUT}/bench-engine.json`, `${JSON.stringify(result, null, 2)}\n`);
