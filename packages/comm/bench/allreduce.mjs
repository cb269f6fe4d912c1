// All-reduce bus bandwidth of @x/comm's NCCL backend, 8 KiB to 1 GiB, side by side with
// torch.distributed (NCCL) in the same run (`pnpm bench:comm`, on the GPU machine):
//   node packages/comm/bench/allreduce.mjs
// One rank per visible GPU, started with @x/comm's launcher (torch's script gets the same
// torchrun-style environment). Both time `iters` back-to-back in-place f32 sum all-reduces on one
// stream with CUDA events after a warm-up; bus bandwidth = bytes / time × 2(n−1)/n (nccl-tests'
// definition; 0 on one GPU, where there is no bus traffic). Prints a table with ratios and writes
// $OUT/bench-comm.json when $OUT is set. NCCL_NVLS_ENABLE=0 in every rank.
import { writeFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { devices, Event, Stream } from '../../core/dist/index.js';
import { Allocator } from '../../cumem/dist/index.js';
import { initGroup, launch, ncclStatus } from '../dist/index.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZES = Array.from({ length: 18 }, (_, i) => 8 * KiB * 2 ** i); // 8 KiB .. 1 GiB
const SCHEDULE = SIZES.map((bytes) => ({
  bytes,
  warmup: bytes <= 64 * MiB ? 10 : 3,
  iters: bytes <= MiB ? 200 : bytes <= 64 * MiB ? 50 : 10,
}));
const HERE = fileURLToPath(new URL('.', import.meta.url));

if (process.argv[2] === 'rank') {
  await rank(JSON.parse(process.argv[3]));
} else {
  await main();
}

async function rank(schedule) {
  const me = Number(process.env.RANK);
  const device = `cuda:${process.env.LOCAL_RANK}`;
  const g = await initGroup({ backend: 'nccl', device, timeoutMs: 120_000 });
  const mem = await Allocator.create({ device });
  const maxBytes = Math.max(...schedule.map((s) => s.bytes));
  const buf = mem.alloc(maxBytes, { tag: 'activations', owner: 'bench' });
  const s = Stream.create(device);
  s.fill(buf.ptr, maxBytes, 0, 4); // zeros: repeated in-place sums stay 0 (no inf/NaN)
  const out = [];
  for (const { bytes, warmup, iters } of schedule) {
    const t = buf.tensor('f32', [bytes / 4]);
    for (let i = 0; i < warmup; i++) g.allReduce(t, 'sum', s);
    const e0 = Event.create(device, { timing: true });
    const e1 = Event.create(device, { timing: true });
    s.record(e0);
    for (let i = 0; i < iters; i++) g.allReduce(t, 'sum', s);
    s.record(e1);
    await e1.wait({ timeoutMs: 120_000 });
    out.push({ bytes, us: (e0.elapsedTime(e1) * 1000) / iters });
  }
  await g.wait(); // rejects if the watchdog saw a failure
  if (me === 0) console.log(`RESULT ${JSON.stringify({ sizes: out })}`);
  s.dispose();
  g.dispose();
  await mem.dispose();
}

async function ranks(script, n, env = {}) {
  let text = '';
  const sink = new Writable({
    write(chunk, _enc, cb) {
      text += chunk;
      cb();
    },
  });
  const r = await launch({
    script,
    args: script.endsWith('.py') ? [JSON.stringify(SCHEDULE)] : ['rank', JSON.stringify(SCHEDULE)],
    nprocPerNode: n,
    env: { NCCL_NVLS_ENABLE: '0', PYTHONUNBUFFERED: '1', ...env },
    stdout: sink,
    stderr: sink,
    graceMs: 5000,
  });
  const m = /^\[rank 0\] RESULT (.*)$/m.exec(text);
  return r.exitCode === 0 && m
    ? { ok: true, ...JSON.parse(m[1]) }
    : { ok: false, why: `exit ${r.exitCode}: ${text.trim().split('\n').slice(-8).join(' | ')}` };
}

function human(bytes) {
  if (bytes >= 1024 * MiB) return `${bytes / (1024 * MiB)} GiB`;
  return bytes >= MiB ? `${bytes / MiB} MiB` : `${bytes / KiB} KiB`;
}

async function main() {
  const gpus = devices().filter((d) => d.kind === 'cuda');
  const n = gpus.length;
  if (n === 0) {
    console.error('bench:comm: no CUDA GPU visible; this benchmark runs on the GPU machine');
    process.exit(1);
  }
  const nccl = ncclStatus();
  const x = await ranks(fileURLToPath(import.meta.url), n);
  const torch = await ranks(`${HERE}torch_allreduce.py`, n);
  const factor = (2 * (n - 1)) / n;
  const bus = (bytes, us) => (bytes / (us * 1e-6) / 1e9) * factor; // GB/s
  const rows = SIZES.map((bytes, i) => {
    const xu = x.ok ? x.sizes[i].us : null;
    const tu = torch.ok ? torch.sizes[i].us : null;
    return {
      bytes,
      xUs: xu,
      xBusGBs: xu === null ? null : bus(bytes, xu),
      torchUs: tu,
      torchBusGBs: tu === null ? null : bus(bytes, tu),
      bwRatio: xu !== null && tu !== null && n > 1 ? tu / xu : null,
      latencyDeltaUs: xu !== null && tu !== null ? xu - tu : null,
    };
  });
  const f = (v, d = 1) => (v === null ? '—' : v.toFixed(d));
  console.log(
    `all-reduce f32 sum, in place, ${n} × ${gpus[0].name}; x: NCCL ${nccl.version}` +
      (torch.ok ? `; torch ${torch.torch} (NCCL ${torch.nccl})` : ''),
  );
  console.log(
    '| size | x µs | x busbw GB/s | torch µs | torch busbw GB/s | x/torch bw | x − torch µs |',
  );
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    console.log(
      `| ${human(r.bytes)} | ${f(r.xUs)} | ${f(r.xBusGBs)} | ${f(r.torchUs)} | ${f(r.torchBusGBs)} | ${f(r.bwRatio, 3)} | ${f(r.latencyDeltaUs)} |`,
    );
  }
  if (!x.ok) console.log(`x ranks failed: ${x.why}`);
  if (!torch.ok) console.log(`torch.distributed baseline not run: ${torch.why}`);
  const big = rows.filter((r) => r.bytes >= 64 * MiB && r.bwRatio !== null);
  const small = rows[0];
  const targets = {
    busbwAtLeast95PctFrom64MiB:
      n < 2
        ? 'not measurable on 1 GPU (no bus traffic)'
        : big.length
          ? big.every((r) => r.bwRatio >= 0.95)
          : null,
    latencyWithin5UsAt8KiB: small.latencyDeltaUs === null ? null : small.latencyDeltaUs <= 5,
  };
  console.log(`targets: ${JSON.stringify(targets)}`);
  if (process.env.OUT) {
    const report = {
      date: new Date().toISOString(),
      gpus: n,
      gpu: gpus[0].name,
      nccl: nccl.version,
      torch: torch.ok ? { version: torch.torch, nccl: torch.nccl } : { error: torch.why },
      x: x.ok ? 'ok' : { error: x.why },
      schedule: SCHEDULE,
      rows,
      targets,
    };
    writeFileSync(`${process.env.OUT}/bench-comm.json`, `${JSON.stringify(report, null, 2)}\n`);
  }
  if (!x.ok) process.exitCode = 1;
}
