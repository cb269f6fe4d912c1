import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { Stream } from '@x/core';
import { registeredRanges } from '@x/core/testing';
import { describe, expect, it } from 'vitest';
import { Allocator } from './allocator.js';
import { rss } from './test-util.js';

const MiB = 1 << 20;

describe('Allocator under load (CPU backend)', () => {
  it('resident memory drops by the discarded bytes on sleep', async () => {
    const a = await Allocator.create({ device: 'cpu' });
    const kv = a.alloc(64 * MiB, { tag: 'kv_cache' });
    const s = Stream.create('cpu');
    s.fill(kv.ptr, 64 * MiB, 0x11, 1); // touch every page
    await s.synchronize();
    const before = rss();
    await a.sleep({ tags: ['kv_cache'] });
    const after = rss();
    expect(before - after).toBeGreaterThanOrEqual(60 * MiB);
    await a.wake();
    await a.dispose();
  });

  it('resident memory after 100 cycles stays within a few MiB of cycle 1', async () => {
    const a = await Allocator.create({ device: 'cpu' });
    const w = a.alloc(16 * MiB, { tag: 'weights' });
    const kv = a.alloc(16 * MiB, { tag: 'kv_cache' });
    const s = Stream.create('cpu');
    a.registerStream(s);
    const cycle = async () => {
      s.fill(w.ptr, 16 * MiB, 0x22, 1).fill(kv.ptr, 16 * MiB, 0x33, 1);
      await a.sleep();
      await a.wake();
    };
    await cycle();
    const first = rss();
    for (let c = 0; c < 99; c++) await cycle();
    const last = rss();
    expect(Math.abs(last - first)).toBeLessThan(8 * MiB);
    await a.dispose();
  }, 60_000);

  it('allocates, sleeps and wakes from several threads at once', async () => {
    const entry = new URL('../dist/index.js', import.meta.url).href;
    const src = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.entry).then(async ({ Allocator }) => {
        const a = await Allocator.create({ device: 'cpu' });
        let ok = 0;
        for (let i = 0; i < 50; i++) {
          const w = a.alloc(4096 + i, { tag: 'weights', owner: 'worker' + i });
          const bytes = new Uint8Array(w.size).fill(i + 1);
          await w.write(0, bytes);
          await a.sleep();
          await a.wake();
          const back = await w.read(0, w.size);
          if (back.every((b) => b === i + 1)) ok++;
          a.free(w);
        }
        await a.dispose();
        parentPort.postMessage(ok);
      });`;
    const workers = [0, 1, 2].map(() => new Worker(src, { eval: true, workerData: { entry } }));
    const main = await Allocator.create({ device: 'cpu' });
    const m = main.alloc(8192, { tag: 'kv_cache' });
    for (let i = 0; i < 20; i++) {
      await main.sleep();
      await main.wake();
    }
    const results = await Promise.all(
      workers.map(
        (w) => new Promise<number>((res, rej) => w.once('message', res).once('error', rej)),
      ),
    );
    expect(results).toEqual([50, 50, 50]);
    expect(m.state).toBe('awake');
    await main.dispose();
  }, 60_000);

  it('shuts down in any state without leaking ranges', async () => {
    const owned = () => registeredRanges().filter((r) => r.owner.startsWith('cumem(')).length;
    const base = owned();
    // asleep
    const a = await Allocator.create({ device: 'cpu' });
    a.alloc(4096, { tag: 'weights' });
    a.alloc(4096, { tag: 'kv_cache' });
    await a.sleep();
    await a.dispose();
    // half awake
    const b = await Allocator.create({ device: 'cpu' });
    b.alloc(4096, { tag: 'weights' });
    b.alloc(4096, { tag: 'kv_cache' });
    await b.sleep();
    await b.wake({ tags: ['kv_cache'] });
    await b.dispose();
    // mid-sleep: dispose waits for the sleep in flight
    const c = await Allocator.create({ device: 'cpu' });
    const w = c.alloc(4096, { tag: 'weights' });
    const s = Stream.create('cpu');
    c.registerStream(s);
    s.delay(100).fill(w.ptr, 4096, 1, 1);
    const sleeping = c.sleep();
    await c.dispose();
    await sleeping;
    expect(owned()).toBe(base);
    // a process that exits without dispose, asleep, exits cleanly
    const script = `import('${new URL('../dist/index.js', import.meta.url).href}').then(async ({ Allocator }) => {
      const a = await Allocator.create({ device: 'cpu' });
      a.alloc(1 << 20, { tag: 'weights' });
      await a.sleep();
      console.log('done');
    });`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
    expect(r.stdout.trim()).toBe('done');
    expect(r.status).toBe(0);
  });
});
