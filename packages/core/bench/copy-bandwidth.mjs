// Pinned host <-> device copy bandwidth of x's Stream.copy against a plain CUDA-runtime program
// (copy_baseline.cu) measured in the same run, on cuda:0.
//   pnpm bench:core            (or: node packages/core/bench/copy-bandwidth.mjs)
// Method: timing events around K copies of S bytes on one stream, after W untimed copies;
// GB/s = S * K / seconds / 1e9; the median of R repeats. Writes $OUT/bench-core.json when OUT is set.
// Always exits 0 when it could measure: the ratio is reported (PASS/MISS), not enforced.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cudaStatus, devices, Event, HostBuffer, Stream } from '../dist/index.js';
import { deviceAllocForTesting, deviceFreeForTesting } from '../dist/testing.js';

const DEV = 'cuda:0';
const BYTES = 256 * 1024 * 1024; // S
const COPIES = 20; // K
const REPEATS = 5; // R
const WARMUPS = 3; // W
const TARGET = 0.9; // x / baseline
const here = dirname(fileURLToPath(import.meta.url));

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Median GB/s of `COPIES` copies src -> dst on `stream`, timed with events. */
async function measure(stream, dst, src) {
  const start = Event.create(DEV, { timing: true });
  const end = Event.create(DEV, { timing: true });
  for (let i = 0; i < WARMUPS; i++) stream.copy(dst, src, BYTES);
  await stream.synchronize();
  const rates = [];
  for (let r = 0; r < REPEATS; r++) {
    start.record(stream);
    for (let i = 0; i < COPIES; i++) stream.copy(dst, src, BYTES);
    end.record(stream);
    await end.wait();
    rates.push((BYTES * COPIES) / (start.elapsedTime(end) / 1e3) / 1e9);
  }
  return median(rates);
}

async function measureX() {
  const host = HostBuffer.alloc(BYTES, { device: DEV });
  const dev = deviceAllocForTesting(DEV, BYTES);
  const stream = Stream.create(DEV);
  try {
    host.bytes.fill(0x5a);
    const h2d = await measure(stream, dev, host.ptr);
    const d2h = await measure(stream, host.ptr, dev);
    return { h2d, d2h };
  } finally {
    await stream.synchronize();
    stream.dispose();
    deviceFreeForTesting(DEV, dev);
    host.dispose();
  }
}

function findNvcc() {
  const onPath = (process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'nvcc'));
  return [...onPath, '/usr/local/cuda/bin/nvcc'].find((p) => existsSync(p));
}

/** Compiles and runs copy_baseline.cu; returns { h2d, d2h } or { skipped: reason }. */
function measureBaseline() {
  const nvcc = findNvcc();
  if (!nvcc) return { skipped: 'nvcc not found on PATH or at /usr/local/cuda/bin/nvcc' };
  const dir = mkdtempSync(join(tmpdir(), 'x-copy-baseline-'));
  try {
    const exe = join(dir, 'copy_baseline');
    const cc = spawnSync(nvcc, ['-O2', '-o', exe, join(here, 'copy_baseline.cu')], {
      encoding: 'utf8',
    });
    if (cc.status !== 0) return { skipped: `nvcc failed: ${cc.stderr || cc.error}` };
    const args = [BYTES, COPIES, REPEATS, WARMUPS].map(String);
    const run = spawnSync(exe, args, { encoding: 'utf8', timeout: 300_000 });
    if (run.status !== 0) return { skipped: `copy_baseline failed: ${run.stderr || run.error}` };
    const out = JSON.parse(run.stdout.trim().split('\n').at(-1));
    return { h2d: out.h2d_gbps, d2h: out.d2h_gbps };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const status = cudaStatus();
const gpu = devices().find((d) => d.kind === 'cuda');
if (!status.available || !gpu) {
  console.log(`no CUDA device: ${status.reason ?? 'devices() lists no GPU'}; nothing measured.`);
  process.exit(0);
}

const x = await measureX();
const baseline = measureBaseline();
const fmt = (v) => (v === undefined ? 'n/a' : v.toFixed(1));
const rows = [
  ['h2d', 'host→device (pinned)'],
  ['d2h', 'device→host (pinned)'],
].map(([key, direction]) => {
  const base = baseline[key];
  const ratio = base === undefined ? undefined : x[key] / base;
  const verdict = ratio === undefined ? 'n/a' : ratio >= TARGET ? 'PASS' : 'MISS';
  return { direction, xGbps: x[key], baselineGbps: base, ratio, verdict };
});
const report = {
  gpu: gpu.name,
  driver: status.driverVersion,
  date: new Date().toISOString(),
  method: { bytes: BYTES, copies: COPIES, repeats: REPEATS, warmups: WARMUPS, stat: 'median' },
  target: TARGET,
  baselineSkipped: baseline.skipped,
  rows,
};

console.log(
  `# @x/core copy bandwidth — ${gpu.name}, driver ${status.driverVersion}, ${report.date}`,
);
console.log(
  `S = ${BYTES / 2 ** 20} MiB, K = ${COPIES}, median of ${REPEATS}, ${WARMUPS} warmups\n`,
);
if (baseline.skipped) console.log(`baseline skipped: ${baseline.skipped}\n`);
console.log('| direction | x GB/s | baseline GB/s | ratio | target (≥ 0.90) |');
console.log('|---|---:|---:|---:|---|');
for (const r of rows) {
  const ratio = r.ratio === undefined ? 'n/a' : r.ratio.toFixed(3);
  console.log(
    `| ${r.direction} | ${fmt(r.xGbps)} | ${fmt(r.baselineGbps)} | ${ratio} | ${r.verdict} |`,
  );
}
if (process.env.OUT) {
  mkdirSync(process.env.OUT, { recursive: true });
  writeFileSync(join(process.env.OUT, 'bench-core.json'), `${JSON.stringify(report, null, 2)}\n`);
}
