// pnpm bench:cumem — sleep and wake of 16 GiB of `weights` in 1,024 allocations on a CUDA GPU,
// against a plain pinned copy measured in the same run. Writes $OUT/bench-cumem.json when OUT is set.
//   node packages/cumem/bench/sleep-wake.mjs [--gib 16] [--allocs 1024]
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cudaStatus, devices, Event, HostBuffer, Stream } from '../../core/dist/index.js';
import { deviceAllocForTesting, deviceFreeForTesting } from '../../core/dist/testing.js';
import { Allocator } from '../dist/index.js';

const { values } = parseArgs({
  options: { gib: { type: 'string', default: '16' }, allocs: { type: 'string', default: '1024' } },
});
const GiB = 2 ** 30;
const total = Number(values.gib) * GiB;
const count = Number(values.allocs);
const each = total / count;
const DEVICE = 'cuda:0';

if (!cudaStatus().available) {
  console.log(`no CUDA device: ${cudaStatus().reason}`);
  process.exit(0);
}
const gpu = devices().find((d) => d.device === DEVICE);
const patternOf = (i) => (BigInt(i + 1) * 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// The floor: a plain pinned copy, 1 GiB at a time, timed with events.
async function pinnedCopyGBps() {
  const bytes = GiB;
  const host = HostBuffer.alloc(bytes, { device: DEVICE });
  const dev = deviceAllocForTesting(DEVICE, bytes);
  const s = Stream.create(DEVICE);
  const run = (dst, src) => {
    const t = [];
    for (let r = 0; r < 5; r++) {
      const e0 = s.record(Event.create(DEVICE, { timing: true }));
      for (let k = 0; k < 4; k++) s.copy(dst, src, bytes);
      const e1 = s.record(Event.create(DEVICE, { timing: true }));
      e1.synchronizeSync();
      t.push((4 * bytes) / (e0.elapsedTime(e1) / 1e3) / 1e9);
    }
    return median(t.slice(1));
  };
  const h2d = run(dev, host.ptr);
  const d2h = run(host.ptr, dev);
  deviceFreeForTesting(DEVICE, dev);
  host.dispose();
  return { h2d, d2h };
}

async function timed(fn) {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1e3;
}

const floor = await pinnedCopyGBps();
const a = await Allocator.create({ device: DEVICE });
const s = Stream.create(DEVICE);
const allocs = [];
for (let i = 0; i < count; i++) {
  const w = a.alloc(each, { tag: 'weights', owner: `layer${i}` });
  s.fill(w.ptr, each, patternOf(i), 8);
  allocs.push(w);
}
await s.synchronize();

const reserve = await timed(() => a.reserveBackups()); // pins the host backups (parallel threads)
const sleepFirst = await timed(() => a.sleep());
const wakes = [];
const sleeps = [];
for (let c = 0; c < 3; c++) {
  wakes.push(await timed(() => a.wake()));
  sleeps.push(await timed(() => a.sleep())); // host memory reused (reuseHostMemory)
}
wakes.push(await timed(() => a.wake()));
// Contents after four cycles.
for (const i of [0, Math.floor(count / 2), count - 1]) {
  const b = await allocs[i].read(each - 8, 8);
  const v = new DataView(b.buffer, b.byteOffset).getBigUint64(0, true);
  if (v !== patternOf(i)) throw new Error(`allocation ${i} corrupted after wake`);
}
await a.dispose();

// Unchanged weights with keepBackup: the second sleep copies nothing.
const k = await Allocator.create({ device: DEVICE });
k.defineTag('frozen', { onSleep: 'offload', keepBackup: true });
for (let i = 0; i < count; i++) k.alloc(each, { tag: 'frozen', owner: `layer${i}` });
await k.sleep();
await k.wake();
const sleepFrozen = await timed(() => k.sleep());
await k.dispose();

const gbps = (t) => total / t / 1e9;
const rows = [
  ['reserveBackups (pins 16 GiB of host memory)', reserve, gbps(reserve), floor.d2h],
  ['sleep (offload), first after reserveBackups', sleepFirst, gbps(sleepFirst), floor.d2h],
  ['sleep (offload), host memory reused', median(sleeps), gbps(median(sleeps)), floor.d2h],
  ['wake (restore)', median(wakes), gbps(median(wakes)), floor.h2d],
  ['sleep, unchanged keepBackup tag', sleepFrozen, gbps(sleepFrozen), floor.d2h],
];
const date = new Date().toISOString().slice(0, 10);
console.log(
  `\n@x/cumem sleep/wake — ${gpu?.name} — ${date} — ${values.gib} GiB in ${count} allocations`,
);
console.log(
  `plain pinned copy: host→device ${floor.h2d.toFixed(1)} GB/s, device→host ${floor.d2h.toFixed(1)} GB/s\n`,
);
console.log('| operation | seconds | GB/s | plain copy GB/s | ratio | target |');
console.log('|---|---:|---:|---:|---:|---|');
for (const [name, t, g, f] of rows) {
  const ratio = g / f;
  const target = name.startsWith('sleep, unchanged')
    ? 'instant'
    : name.includes('first')
      ? 'report'
      : '≥ 0.80';
  const mark = target === '≥ 0.80' ? (ratio >= 0.8 ? 'PASS' : 'MISS') : '';
  console.log(
    `| ${name} | ${t.toFixed(3)} | ${g.toFixed(1)} | ${f.toFixed(1)} | ${ratio.toFixed(2)} | ${target} ${mark} |`,
  );
}
if (process.env.OUT) {
  writeFileSync(
    join(process.env.OUT, 'bench-cumem.json'),
    JSON.stringify({ gpu: gpu?.name, date, totalBytes: total, count, floor, rows }, null, 2),
  );
}
