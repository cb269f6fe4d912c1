// GPU-only checks for @x/cumem on a CUDA device (run with Node alone on the GPU machine):
//   node packages/cumem/test/gpu/cumem.gpu.mjs
// The device-generic suite runs separately: X_TEST_DEVICE=cuda:0 node packages/cumem/dist-gpu/allocator.test.mjs
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryInfo, OutOfMemoryError, Stream } from '../../../core/dist/index.js';
import { deviceAllocForTesting, deviceFreeForTesting } from '../../../core/dist/testing.js';
import { Allocator } from '../../dist/index.js';

const DEVICE = process.env.X_TEST_DEVICE ?? 'cuda:0';
const MiB = 1 << 20;
const GiB = 1 << 30;

async function readWord(alloc, offset) {
  const b = await alloc.read(offset, 8);
  return new DataView(b.buffer, b.byteOffset).getBigUint64(0, true);
}

describe(`@x/cumem on ${DEVICE}`, () => {
  it('a kernel still writing a buffer when sleep is called: sleep waits, contents survive', async () => {
    const a = await Allocator.create({ device: DEVICE });
    const w = a.alloc(256 * MiB, { tag: 'weights', owner: 'w' });
    // Deliberately NOT registered: the device-wide quiesce must cover streams it was not told about.
    const s = Stream.create(DEVICE);
    const pattern = 0x0123456789abcdefn;
    s.delay(300).fill(w.ptr, 256 * MiB, pattern, 8); // spin kernel, then the 8-byte fill kernel
    const t0 = performance.now();
    await a.sleep();
    const slept = performance.now() - t0;
    assert.ok(
      slept >= 250,
      `sleep returned after ${slept.toFixed(0)} ms, before the kernels finished`,
    );
    await s.synchronize(); // no error on the stream
    await a.wake();
    for (const off of [0, 128 * MiB, 256 * MiB - 8]) assert.equal(await readWord(w, off), pattern);
    await a.dispose();
  });

  it('driver free memory rises by at least 99% of the slept bytes, and falls back on wake', async () => {
    const a = await Allocator.create({ device: DEVICE });
    const kv = Array.from({ length: 32 }, (_, i) =>
      a.alloc(128 * MiB, { tag: 'kv_cache', owner: `kv${i}` }),
    );
    const bytes = kv.reduce((n, k) => n + k.paddedSize, 0);
    const before = memoryInfo(DEVICE).freeBytes;
    await a.sleep({ tags: ['kv_cache'] });
    const asleep = memoryInfo(DEVICE).freeBytes;
    assert.ok(asleep - before >= 0.99 * bytes, `free rose by ${asleep - before} of ${bytes} bytes`);
    await a.wake();
    const awake = memoryInfo(DEVICE).freeBytes;
    assert.ok(asleep - awake >= 0.99 * bytes, `free fell by ${asleep - awake} of ${bytes} bytes`);
    await a.dispose();
  });

  it('real out-of-memory at wake: typed error, nothing left mapped, retry succeeds', async () => {
    const a = await Allocator.create({ device: DEVICE });
    const w = a.alloc(1 * GiB, { tag: 'weights', owner: 'big' });
    const s = Stream.create(DEVICE);
    s.fill(w.ptr, GiB, 0x5a5a5a5a, 4);
    await s.synchronize();
    await a.sleep();
    const free = memoryInfo(DEVICE).freeBytes;
    const filler = deviceAllocForTesting(DEVICE, free - 512 * MiB); // leave less than 1 GiB
    try {
      await assert.rejects(a.wake(), (e) => e instanceof OutOfMemoryError && e.tag === 'weights');
      assert.equal(a.stats().weights.mapped, 0);
      assert.equal(a.isAsleep('weights'), true);
    } finally {
      deviceFreeForTesting(DEVICE, filler);
    }
    await a.wake();
    assert.equal(await readWord(w, GiB - 8), 0x5a5a5a5a5a5a5a5an);
    await a.dispose();
  });

  it('addresses stay identical over 20 level-1 cycles with 64 allocations', async () => {
    const a = await Allocator.create({ device: DEVICE });
    const ws = Array.from({ length: 64 }, (_, i) =>
      a.alloc(3 * MiB + i, { tag: 'weights', owner: `w${i}` }),
    );
    const ptrs = ws.map((w) => w.ptr);
    const s = Stream.create(DEVICE);
    for (const [i, w] of ws.entries())
      s.fill(w.ptr, 3 * MiB, BigInt(i + 1) * 0x0101010101010101n, 8);
    await s.synchronize();
    for (let c = 0; c < 20; c++) {
      await a.sleep();
      await a.wake();
    }
    assert.deepEqual(
      ws.map((w) => w.ptr),
      ptrs,
    );
    for (const [i, w] of ws.entries())
      assert.equal(await readWord(w, 3 * MiB - 8), BigInt(i + 1) * 0x0101010101010101n);
    await a.dispose();
  });
});
