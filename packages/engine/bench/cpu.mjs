// CPU throughput of the model runner: prefill tok/s and single-stream decode tok/s, with decode's
// ratio to the memory-bandwidth floor (weight bytes streamed per decode step ÷ measured copy
// bandwidth of this machine).
//   pnpm bench:cpu [--model DIR] [--dtype f32|bf16] [--prompt 256] [--decode 64]
// Default model: packages/engine/models/default when present, else a random ~15.7M-parameter
// Llama built in memory. Bandwidth: Stream.copy of 256 MiB (one thread, memmove), read+write
// bytes counted, median of 5. Writes $OUT/bench-cpu.json when OUT is set.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
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
const DECODE = Number(values.decode);
const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];

/** GB/s of a 256 MiB memmove on a CPU stream, read + write bytes counted. */
async function copyBandwidth() {
  const bytes = 256 << 20;
  const a = HostBuffer.alloc(bytes);
  const b = HostBuffer.alloc(bytes);
  a.bytes.fill(1);
  b.bytes.fill(2);
  const s = Stream.create('cpu');
  const rates = [];
  for (let i = 0; i < 6; i++) {
    const t0 = performance.now();
    s.copy(b.ptr, a.ptr, bytes);
    await s.synchronize();
    const sec = (performance.now() - t0) / 1e3;
    if (i > 0) rates.push((2 * bytes) / sec / 1e9);
  }
  s.dispose();
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

// Decode: one sequence, one token per step, greedy on the returned logits.
let ctx = PROMPT;
let next = 1;
const stepTimes = [];
for (let i = 0; i < DECODE; i++) {
  const t0 = performance.now();
  const { logits } = await runner.execute([
    { tokens: [next], blockTable: table, contextLength: ++ctx },
  ]);
  stepTimes.push(performance.now() - t0);
  next = logits.indexOf(Math.max(...logits));
}
const decodeMs = median(stepTimes.slice(4));

const bandwidth = await copyBandwidth();
const weightBytes = runner.model.weightBytes();
const floorMs = (weightBytes / (bandwidth * 1e9)) * 1e3;
const result = {
  date: new Date().toISOString().slice(0, 10),
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  kernels: cpuKernelInfo(),
  model: modelName,
  weightBytesPerDecodeStep: weightBytes,
  copyBandwidthGBs: Number(bandwidth.toFixed(2)),
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
  },
};
console.log(JSON.stringify(result, null, 2));
console.log(
  `prefill ${result.prefill.tokPerS} tok/s | decode ${result.decode.tokPerS} tok/s ` +
    `(${result.decode.msPerToken} ms/token, floor ${result.decode.floorMsPerToken} ms, ` +
    `${result.decode.ratioToFloor}× the floor; target <= 2×)`,
);
if (process.env.OUT) {
  mkdirSync(process.env.OUT, { recursive: true });
  writeFileSync(join(process.env.OUT, 'bench-cpu.json'), JSON.stringify(result, null, 2));
}
await runner.dispose();
weights.dispose();
stream.dispose();
await allocator.dispose();
