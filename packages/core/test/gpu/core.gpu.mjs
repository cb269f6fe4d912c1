// GPU checks of @x/core that run with Node alone (no vitest) on the GPU machine:
//   source .device/activate.sh && node packages/core/test/gpu/core.gpu.mjs
// Imports the built dist/ by relative path, so `pnpm build` (or a staged .device/tree) must exist.
// Tests run one after another on cuda:0; each frees what it allocates.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { after, test } from 'node:test';
import { CudaGraph, cudaStatus, devices, Event, HostBuffer, Stream } from '../../dist/index.js';
import { deviceAllocForTesting, deviceFreeForTesting } from '../../dist/testing.js';

const DEV = 'cuda:0';
const MiB = 1024 * 1024;
const status = cudaStatus();
const gpus = devices().filter((d) => d.kind === 'cuda');
const hasGpu = status.available && gpus.length > 0;
if (!hasGpu) {
  console.error(`core.gpu.mjs needs a CUDA GPU: ${status.reason ?? 'devices() lists no GPU'}`);
}
// Without a GPU the first test fails with the reason and the rest are skipped.
const gpu = { skip: hasGpu ? false : 'no CUDA device' };

// Device and pinned host memory allocated through `track` are freed after all tests.
const owned = [];
function deviceAlloc(bytes) {
  const ptr = deviceAllocForTesting(DEV, bytes);
  owned.push(() => deviceFreeForTesting(DEV, ptr));
  return ptr;
}
function pinned(bytes) {
  const h = HostBuffer.alloc(bytes, { device: DEV });
  owned.push(() => h.dispose());
  return h;
}
after(() => {
  for (const free of owned.reverse()) free();
});

/** Index of the first byte of `bytes` that differs from `value`, or -1. */
function firstMismatch(bytes, value) {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== value) return i;
  return -1;
}

test('devices() reports a CUDA GPU and cudaStatus() is available', () => {
  assert.equal(status.available, true, `cudaStatus(): ${status.reason}`);
  assert.ok(gpus.length >= 1, 'devices() lists no cuda device');
  const g = gpus[0];
  assert.equal(g.device, 'cuda:0');
  assert.ok(g.name.length > 0, 'empty GPU name');
  assert.ok(g.totalBytes > 0, `totalBytes ${g.totalBytes}`);
  assert.match(g.computeCapability ?? '', /^\d+\.\d+$/);
  console.log(`# ${g.name}, sm ${g.computeCapability}, ${(g.totalBytes / 2 ** 30).toFixed(1)} GiB`);
});

test('an event orders a copy on stream B after a fill on stream A', gpu, async () => {
  const n = 64 * MiB;
  const dev = deviceAlloc(n);
  const host = pinned(n);
  const a = Stream.create(DEV);
  const b = Stream.create(DEV);
  host.bytes.fill(0x55);
  a.fill(dev, n, 0x00, 1);
  await a.synchronize();

  a.delay(50).fill(dev, n, 0xab, 1);
  const filled = a.record();
  b.waitEvent(filled).copy(host.ptr, dev, n);
  await b.synchronize();
  assert.equal(firstMismatch(host.bytes, 0xab), -1, 'a byte was copied before the fill ended');
  a.dispose();
  b.dispose();
});

test('without the event, stream B does not wait for stream A (control)', gpu, async () => {
  const n = 64 * MiB;
  const dev = deviceAlloc(n);
  const host = pinned(n);
  const a = Stream.create(DEV);
  const b = Stream.create(DEV);
  host.bytes.fill(0x55);
  a.fill(dev, n, 0x00, 1);
  await a.synchronize();

  // The fill sits behind 200 ms of GPU spin; a 64 MiB copy takes a few ms.
  a.delay(200).fill(dev, n, 0xab, 1);
  b.copy(host.ptr, dev, n);
  await b.synchronize();
  await a.synchronize();
  assert.equal(host.bytes[0], 0x00, 'B saw the fill (or no copy): streams are not independent');
  a.dispose();
  b.dispose();
});

test('await event.wait() keeps the JS event loop running', gpu, async () => {
  const s = Stream.create(DEV);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  const t0 = performance.now();
  await s.delay(300).record().wait();
  const waited = performance.now() - t0;
  clearInterval(timer);
  assert.ok(waited >= 250, `wait returned after ${waited.toFixed(0)} ms, before the 300 ms delay`);
  assert.ok(ticks >= 10, `only ${ticks} interval ticks during ${waited.toFixed(0)} ms`);
  s.dispose();
});

test('host -> device -> host copy of an odd size is byte-exact', gpu, async () => {
  const n = 12_345_679;
  const src = pinned(n);
  const dst = pinned(n);
  const dev = deviceAlloc(n);
  randomFillSync(src.bytes);
  dst.bytes.fill(0);
  const s = Stream.create(DEV);
  s.copy(dev, src.ptr, n).copy(dst.ptr, dev, n);
  await s.synchronize();
  assert.ok(Buffer.from(dst.buffer).equals(Buffer.from(src.buffer)), 'round trip differs');
  s.dispose();
});

test('fill widths 2, 4 and 8 write little-endian patterns and nothing outside', gpu, async () => {
  const guard = 4096;
  const n = 8 * 1_000_003; // not a multiple of any block size
  const dev = deviceAlloc(n + 2 * guard);
  const host = pinned(n + 2 * guard);
  const s = Stream.create(DEV);
  const cases = [
    { width: 2, value: 0xbeef, view: (buf) => new Uint16Array(buf, guard, n / 2) },
    { width: 4, value: 0xdeadbeef, view: (buf) => new Uint32Array(buf, guard, n / 4) },
    {
      width: 8,
      value: 0x0123_4567_89ab_cdefn,
      view: (buf) => new BigUint64Array(buf, guard, n / 8),
    },
  ];
  for (const { width, value, view } of cases) {
    s.fill(dev, n + 2 * guard, 0x00, 1)
      .fill(dev + BigInt(guard), n, value, width)
      .copy(host.ptr, dev, n + 2 * guard);
    await s.synchronize();
    const words = view(host.buffer);
    const bad = words.findIndex((w) => w !== value);
    assert.equal(bad, -1, `width ${width}: word ${bad} is ${words[bad]?.toString(16)}`);
    assert.equal(firstMismatch(host.bytes.subarray(0, guard), 0), -1, `width ${width}: before`);
    assert.equal(firstMismatch(host.bytes.subarray(guard + n), 0), -1, `width ${width}: after`);
  }
  s.dispose();
});

test('elapsedTime around delay(20) is between 19 and 200 ms', gpu, async () => {
  const s = Stream.create(DEV);
  const start = Event.create(DEV, { timing: true });
  const end = Event.create(DEV, { timing: true });
  start.record(s);
  s.delay(20);
  end.record(s);
  await end.wait();
  const ms = start.elapsedTime(end);
  assert.ok(ms >= 19 && ms <= 200, `elapsedTime ${ms} ms`);
  s.dispose();
});

// In a child process: a bad address can leave a sticky error in the CUDA context (every later call
// fails) or crash outright (cuMemcpyAsync treats an unknown address as pageable host memory and
// memcpy()s it on the calling thread), which must not take the other tests down with it.
test('copying from address 0x10 fails with a typed error and the process survives', gpu, () => {
  const script = `
    import { Stream } from ${JSON.stringify(new URL('../../dist/index.js', import.meta.url).href)};
    import { deviceAllocForTesting } from ${JSON.stringify(new URL('../../dist/testing.js', import.meta.url).href)};
    const s = Stream.create('cuda:0');
    const dev = deviceAllocForTesting('cuda:0', 4096);
    const out = { enqueue: null, sync: null };
    try { s.copy(dev, 0x10n, 4096); } catch (e) { out.enqueue = { code: e.code, message: e.message }; }
    try { await s.synchronize({ timeoutMs: 10000 }); } catch (e) { out.sync = { code: e.code, message: e.message }; }
    console.log(JSON.stringify(out));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.signal, null, `copy(dev, 0x10n) killed the process (${r.signal}) ${r.stderr}`);
  assert.equal(r.status, 0, `child exited ${r.status}: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1));
  const err = out.enqueue ?? out.sync;
  assert.ok(err, 'copying from 0x10 raised no error at enqueue or synchronize');
  assert.ok(['X_CUDA_ERROR', 'X_INVALID_ARGUMENT'].includes(err.code), JSON.stringify(out));
  console.log(
    `# copy from 0x10: ${out.enqueue ? 'enqueue' : 'synchronize'}: ${err.code} ${err.message}`,
  );
});

test("Stream.create('cuda:63') throws X_NO_DEVICE", gpu, () => {
  assert.throws(() => Stream.create('cuda:63'), { code: 'X_NO_DEVICE' });
});

// CUDA graphs: core's own ops (the 8-byte fill kernel, copies) into pinned host memory, which is
// registered and device-accessible. Kernel graphs and sleep/wake are checked in @x/kernels' suite.
test(
  'a captured graph replays its work each launch; capture refuses synchronize',
  gpu,
  async () => {
    const n = 1 << 20;
    const a = pinned(n);
    const b = pinned(n);
    const s = Stream.create(DEV);
    const pattern = 0x0bad_cafe_1234_5678n;
    const graph = CudaGraph.capture(s, () => {
      assert.equal(s.capturing, true);
      s.fill(a.ptr, n, pattern, 8).copy(b.ptr, a.ptr, n);
      assert.throws(() => s.synchronizeSync({ timeoutMs: 1000 }), /captures a graph/);
    });
    assert.equal(s.capturing, false);
    assert.ok(graph.nodeCount >= 2, `nodeCount ${graph.nodeCount}`);
    assert.equal(graph.bufferCount, 2);
    for (let i = 0; i < 3; i++) {
      a.bytes.fill(0);
      b.bytes.fill(0);
      graph.launch(s);
      await s.synchronize();
      const words = new BigUint64Array(b.buffer);
      assert.equal(
        words.findIndex((w) => w !== pattern),
        -1,
        `launch ${i}: b not rewritten`,
      );
    }
    assert.throws(() => graph.launch(Stream.create('cpu')), { code: 'X_INVALID_ARGUMENT' });
    graph.dispose();
    assert.throws(() => graph.launch(s), { code: 'X_DISPOSED' });
    s.dispose();
  },
);

test('capture refuses memory x does not manage; a freed buffer fails the launch', gpu, async () => {
  const s = Stream.create(DEV);
  const dev = deviceAlloc(4096);
  assert.throws(
    () => CudaGraph.capture(s, () => s.fill(dev, 4096, 1n, 8)),
    /not memory x manages.*rule 3/,
  );
  assert.equal(s.capturing, false, 'the failed capture was not ended');
  const h = HostBuffer.alloc(4096, { device: DEV });
  const graph = CudaGraph.capture(s, () => s.fill(h.ptr, 4096, 7n, 8));
  graph.launch(s);
  await s.synchronize();
  assert.equal(new BigUint64Array(h.buffer)[511], 7n);
  h.dispose();
  assert.throws(() => graph.launch(s), /was freed/);
  s.fill(dev, 4096, 0, 1); // the stream still works
  await s.synchronize();
  graph.dispose();
  s.dispose();
});
