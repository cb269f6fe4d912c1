// CPU throughput of the model runner: prefill tok/s and single-stream decode tok/s, with decode's
// ratio to the memory-bandwidth floor (weight bytes streamed per decode step ÷ measured copy
// bandwidth of this machine).
//   pnpm bench:cpu [--model DIR] [--dtype f32|bf16] [--prompt 256] [--decode 64]
// Default model: packages/engine/models/default when present, else a random ~15.7M-parameter
// Llama built in memory. Bandwidth: Stream.copy of 256 MiB (one thread, memmove), read+write
// bytes counted, median of 5 (the floor). A second, stricter floor copies a buffer the size of the
// weights on one stream per core: it stays in a large last-level cache as the weights do between
// decode steps and uses every core as the kernels do.
// Writes $OUT/bench-cpu.json when OUT is set.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { HostBuffer, Stream } from '@x/core';
import { Allocator } from '@x/cumem';
import { cpuKernelInfo } from '@x/kernels';
import { loadModelConfig, loadWeights, ModelRunner, randomWeights } from '../dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    dtype: { type: 'string' },
    prompt: { type: 'string', default: '256' },
    decode: { type: 'string', default: '64' },
  },
});
const PROMPT = Number(values.prompt);
// Other processes share the cores: record the 1-minute load average around the run.
const loadBefore = loadavg()[0];
const DECODE = Number(values.decode);
const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];

/**
 * GB/s of a memmove of `bytes` on CPU streams, read + write bytes counted (median of `reps` - 1
 * after a warm-up). With `streams` > 1 the buffer is split and each part copied on its own
 * stream (its own thread) at the same time.
 */
async function copyBandwidth(bytes = 256 << 20, reps = 6, streams = 1) {
  const part = Math.floor(bytes / streams / 64) * 64;
  const a = HostBuffer.alloc(part * streams);
  const b = HostBuffer.alloc(part * streams);
  a.bytes.fill(1);
  b.bytes.fill(2);
  const ss = Array.from({ length: streams }, () => Stream.create('cpu'));
  const rates = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    ss.forEach((s, j) => {
      s.copy(b.ptr + BigInt(j * part), a.ptr + BigInt(j * part), part);
    });
    await Promise.all(ss.map((s) => s.synchronize()));
    const sec = (performance.now() - t0) / 1e3;
    if (i > 0) rates.push((2 * part * streams) / sec / 1e9);
  }
  for (const s of ss) s.dispose();
  a.dispose();
  b.dispose();
  return median(rates);
}

const RANDOM_LLAMA = {
  architecture: 'LlamaForCausalLM',
  hiddenSize: 384,
  intermediateSize: 1024,
  numLayers: 6,
  numHeads: 6,
  numKvHeads: 2,
  headDim: 64,
  vocabSize: 8192,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 2048,
  tieWordEmbeddings: false,
  attentionBias: false,
  qkNorm: false,
  dtype: 'f32',
  bosTokenId: 1,
  eosTokenIds: [2],
};

const allocator = await Allocator.create({ device: 'cpu' });
const defaultDir = join(here, '..', 'models', 'default');
const dir = values.model ?? (existsSync(join(defaultDir, 'config.json')) ? defaultDir : undefined);
let config;
let weights;
let modelName;
if (dir) {
  config = await loadModelConfig(dir);
  const dtype = values.dtype ?? (config.dtype === 'f32' ? 'f32' : 'bf16');
  weights = await loadWeights(dir, config, { allocator, dtype });
  modelName = `${dir} (${dtype})`;
} else {
  config = RANDOM_LLAMA;
  const dtype = values.dtype ?? 'f32';
  weights = await randomWeights(config, { allocator, seed: 1, dtype });
  modelName = `random Llama 15.7M params (${dtype}, built in memory)`;
}

const stream = Stream.create('cpu');
const blockSize = 16;
const maxLen = PROMPT + DECODE + 16;
const numKvBlocks = Math.ceil(maxLen / blockSize);
const runner = await ModelRunner.create({
  config,
  weights,
  allocator,
  stream,
  numKvBlocks,
  blockSize,
  maxModelLen: maxLen,
});
const table = Array.from({ length: numKvBlocks }, (_, i) => i);
const tokens = Array.from({ length: PROMPT }, (_, i) => (i * 7919 + 13) % config.vocabSize);

// Prefill: the whole prompt in one step (median of 3, after a warm-up).
const prefillTimes = [];
for (let r = 0; r < 4; r++) {
  const t0 = performance.now();
  await runner.execute([{ tokens, blockTable: table, contextLength: PROMPT }]);
  if (r > 0) prefillTimes.push(performance.now() - t0);
}
const prefillMs = median(prefillTimes);

/** Busy and total CPU time of the whole machine so far, in clock ticks (/proc/stat; Linux). */
function machineTicks() {
  try {
    const f = readFileSync('/proc/stat', 'utf8')
      .split('\n')[0]
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    const idle = f[3] + (f[4] ?? 0); // idle + iowait
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

// Decode: one sequence, one token per step, greedy on the returned logits.
let ctx = PROMPT;
let next = 1;
const stepTimes = [];
const ticks0 = machineTicks();
const own0 = process.cpuUsage();
for (let i = 0; i < DECODE; i++) {
  const t0 = performance.now();
  const { logits } = await runner.execute([
    { tokens: [next], blockTable: table, contextLength: ++ctx },
  ]);
  stepTimes.push(performance.now() - t0);
  next = logits.indexOf(Math.max(...logits));
}
const decodeMs = median(stepTimes.slice(4));
// How much of the machine other processes kept busy while decode ran (0 = idle, 1 = every core):
// machine busy time minus this process's CPU time, over the elapsed machine time.
const ticks1 = machineTicks();
const own = process.cpuUsage(own0);
let othersBusy = null;
if (ticks0 && ticks1 && ticks1.total > ticks0.total) {
  const hz = 100; // USER_HZ: /proc/stat counts 1/100 s
  const ownTicks = ((own.user + own.system) / 1e6) * hz;
  const frac = (ticks1.busy - ticks0.busy - ownTicks) / (ticks1.total - ticks0.total);
  othersBusy = Number(Math.max(0, frac).toFixed(2));
}

const bandwidth = await copyBandwidth();
const weightBytes = runner.model.weightBytes();
const floorMs = (weightBytes / (bandwidth * 1e9)) * 1e3;
// The strict floor: half the weights' size each way (read + write move as many bytes as one decode
// step reads), split over one stream per core, so it is cache-resident and parallel as decode is.
const cachedBandwidth = await copyBandwidth(
  Math.max(1 << 20, Math.ceil(weightBytes / 2)),
  41,
  cpus().length,
);
const cachedFloorMs = (weightBytes / (cachedBandwidth * 1e9)) * 1e3;
let commit = 'unknown';
try {
  commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
    cwd: here,
    encoding: 'utf8',
  }).trim();
} catch {
  // not a git checkout (an installed package): leave it unknown
}
const result = {
  date: new Date().toISOString().slice(0, 10),
  commit,
  loadAverage1m: { before: Number(loadBefore.toFixed(2)), after: Number(loadavg()[0].toFixed(2)) },
  otherProcessesBusyDuringDecode: othersBusy,
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  kernels: cpuKernelInfo(),
  model: modelName,
  weightBytesPerDecodeStep: weightBytes,
  copyBandwidthGBs: Number(bandwidth.toFixed(2)),
  strictCopyBandwidthGBs: Number(cachedBandwidth.toFixed(2)),
  prefill: {
    tokens: PROMPT,
    ms: Number(prefillMs.toFixed(2)),
    tokPerS: Number(((PROMPT / prefillMs) * 1e3).toFixed(1)),
  },
  decode: {
    steps: DECODE,
    msPerToken: Number(decodeMs.toFixed(3)),
    tokPerS: Number((1e3 / decodeMs).toFixed(1)),
    floorMsPerToken: Number(floorMs.toFixed(3)),
    ratioToFloor: Number((decodeMs / floorMs).toFixed(2)),
    strictFloorMsPerToken: Number(cachedFloorMs.toFixed(3)),
    ratioToStrictFloor: Number((decodeMs / cachedFloorMs).toFixed(2)),
  },
};
console.log(JSON.stringify(result, null, 2));
console.log(
  `prefill ${result.prefill.tokPerS} tok/s | decode ${result.decode.tokPerS} tok/s ` +
    `(${result.decode.msPerToken} ms/token, floor ${result.decode.floorMsPerToken} ms, ` +
    `${result.decode.ratioToFloor}× the floor; target <= 2×; strict floor ` +
    `${result.decode.strictFloorMsPerToken} ms, ${result.decode.ratioToStrictFloor}×) | load ${result.loadAverage1m.before}→${result.loadAverage1m.after}, ` +
    `others busy ${othersBusy ?? 'n/a'}`,
);
if (process.env.OUT) {
  mkdirSync(process.env.OUT, { recursive: true });
  writeFileSync(join(process.env.OUT, 'bench-cpu.json'), JSON.stringify(result, null, 2));
}
await runner.dispose();
weights.dispose();
stream.dispose();
await allocator.dispose();
