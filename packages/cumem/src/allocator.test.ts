import {
  AsleepError,
  type DeviceName,
  HostBuffer,
  InvalidArgumentError,
  OutOfMemoryError,
  Stream,
  TimeoutError,
} from '@x/core';
import { afterEach, describe, expect, it } from 'vitest';
import { Allocator } from './allocator.js';
import { randomBytes, sha } from './test-util.js';

// The same suite runs on the CPU in CI and on a GPU with X_TEST_DEVICE=cuda:0 (see docs/gpu.md).
const DEVICE = (process.env.X_TEST_DEVICE ?? 'cpu') as DeviceName;
const open: Allocator[] = [];
async function make(
  options: Partial<Parameters<typeof Allocator.create>[0]> = {},
): Promise<Allocator> {
  const a = await Allocator.create({ device: DEVICE, ...options });
  open.push(a);
  return a;
}
afterEach(async () => {
  for (const a of open.splice(0)) await a.dispose();
});

describe(`Allocator on ${DEVICE}`, () => {
  it('keeps addresses identical across sleep and wake, and restores offloaded bytes exactly', async () => {
    const a = await make();
    const w = a.alloc(3 * 4096 + 17, { tag: 'weights', owner: 'layer0.mlp' });
    const kv = a.alloc(10_000, { tag: 'kv_cache', owner: 'kv' });
    const data = randomBytes(w.size);
    await w.write(0, data);
    const ptrs = [w.ptr, kv.ptr];
    await a.sleep();
    expect(w.state).toBe('asleep');
    expect(a.isAsleep('weights') && a.isAsleep('kv_cache')).toBe(true);
    await a.wake();
    expect([w.ptr, kv.ptr]).toEqual(ptrs);
    expect(sha(await w.read(0, w.size))).toBe(sha(data));
  });

  it('has the built-in tags and user-defined ones', async () => {
    const a = await make();
    expect(a.tags()).toMatchObject({
      weights: { onSleep: 'offload', asleep: false },
      kv_cache: { onSleep: 'discard' },
      activations: { onSleep: 'discard' },
      meta: { onSleep: 'keep' },
    });
    a.defineTag('draft_weights', { onSleep: 'offload' });
    const d = a.alloc(4096, { tag: 'draft_weights', owner: 'draft' });
    const bytes = randomBytes(4096);
    await d.write(0, bytes);
    await a.sleep({ tags: ['draft_weights'] });
    expect(a.isAsleep('weights')).toBe(false);
    await a.wake({ tags: ['draft_weights'] });
    expect(sha(await d.read(0, 4096))).toBe(sha(bytes));
    expect(() => a.defineTag('bad tag', { onSleep: 'keep' })).toThrow(InvalidArgumentError);
    expect(() => a.defineTag('t2', { onSleep: 'forget' as 'keep' })).toThrow(
      'Expected "offload", "discard" or "keep" for t2.onSleep but received "forget"',
    );
    expect(() => a.alloc(8, { tag: 'nope' })).toThrow(/Expected a defined tag/);
  });

  it('sleep waits for queued stream work that writes a tagged buffer; nothing faults', async () => {
    const a = await make();
    const kv = a.alloc(1 << 20, { tag: 'weights', owner: 'w' });
    const s = Stream.create(DEVICE);
    a.registerStream(s);
    s.delay(200).fill(kv.ptr, 1 << 20, 0x5c, 1); // still queued when sleep is called
    const t0 = Date.now();
    await a.sleep({ tags: ['weights'] });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    await expect(s.synchronize()).resolves.toBeUndefined(); // the fill ran, no stream error
    // New work on the sleeping memory is refused, not faulted.
    expect(() => s.fill(kv.ptr, 16, 0, 1)).toThrow(AsleepError);
    await a.wake();
    expect((await kv.read(0, 1 << 20)).every((b) => b === 0x5c)).toBe(true);
  });

  it('refuses API access to sleeping memory with AsleepError', async () => {
    const a = await make();
    const kv = a.alloc(64, { tag: 'kv_cache' });
    await a.sleep({ tags: ['kv_cache'] });
    await expect(kv.read(0, 8)).rejects.toThrow(AsleepError);
    await expect(kv.write(0, new Uint8Array(8))).rejects.toThrow(AsleepError);
    expect(() => a.alloc(64, { tag: 'kv_cache' })).toThrow(AsleepError);
    const s = Stream.create(DEVICE);
    const host = HostBuffer.alloc(64, { device: DEVICE });
    expect(() => s.copy(host.ptr, kv.ptr, 64)).toThrow(/asleep/);
  });

  it('poison mode: discarded memory reads 0xFF after wake, never zeros', async () => {
    const a = await make({ poison: true });
    const kv = a.alloc(5000, { tag: 'kv_cache' });
    const act = a.alloc(100, { tag: 'activations' });
    await kv.write(0, randomBytes(5000));
    await a.sleep();
    await a.wake();
    expect((await kv.read(0, 5000)).every((b) => b === 0xff)).toBe(true);
    expect((await act.read(0, 100)).every((b) => b === 0xff)).toBe(true);
    const f32 = new Float32Array((await kv.read(0, 16)).buffer);
    expect(f32.every(Number.isNaN)).toBe(true);
  });

  it('keep tags are never unmapped; level 2 discards offload tags too', async () => {
    const a = await make({ poison: true });
    const meta = a.alloc(256, { tag: 'meta' });
    const w = a.alloc(256, { tag: 'weights' });
    const m = randomBytes(256);
    await meta.write(0, m);
    await w.write(0, randomBytes(256));
    await a.sleep({ level: 2 });
    expect(meta.state).toBe('awake');
    expect(sha(await meta.read(0, 256))).toBe(sha(m));
    expect(a.stats().weights).toEqual({ allocated: 256, mapped: 0, backedUp: 0, hostReserved: 0 });
    await a.wake();
    expect((await w.read(0, 256)).every((b) => b === 0xff)).toBe(true);
    await expect(a.sleep({ level: 3 as 1 })).rejects.toThrow(
      'Expected 1 or 2 for level but received 3',
    );
  });

  it('double sleep and double wake over tag subsets are no-ops; waking a never-slept tag too', async () => {
    const a = await make();
    const w = a.alloc(4096, { tag: 'weights' });
    const kv = a.alloc(4096, { tag: 'kv_cache' });
    const data = randomBytes(4096);
    await w.write(0, data);
    const subsets: string[][] = [
      ['weights'],
      ['kv_cache'],
      ['weights', 'kv_cache'],
      ['activations'],
    ];
    await a.wake({ tags: ['weights'] }); // never slept
    for (const s1 of subsets) {
      for (const s2 of subsets) {
        await a.sleep({ tags: s1 });
        await a.sleep({ tags: s2 });
        await a.sleep({ tags: s1 });
        for (const t of new Set([...s1, ...s2])) expect(a.isAsleep(t)).toBe(true);
        await a.wake({ tags: s2 });
        await a.wake({ tags: s2 });
        await a.wake();
        await a.wake();
        expect(w.state).toBe('awake');
        expect(kv.state).toBe('awake');
        expect(sha(await w.read(0, 4096))).toBe(sha(data));
      }
    }
    const st = a.stats();
    // The backup's contents are dropped at wake; its host memory is kept for the next sleep.
    expect(st.weights).toEqual({
      allocated: 4096,
      mapped: w.paddedSize,
      backedUp: 0,
      hostReserved: w.paddedSize,
    });
  });

  it('frees allocations while asleep, and their backups with them', async () => {
    const a = await make();
    const w = a.alloc(8192, { tag: 'weights', owner: 'gone' });
    const keep = a.alloc(4096, { tag: 'weights', owner: 'stays' });
    await a.sleep();
    expect(a.stats().weights?.backedUp).toBe(w.paddedSize + keep.paddedSize);
    a.free(w);
    expect(w.state).toBe('freed');
    expect(a.stats().weights).toEqual({
      allocated: 4096,
      mapped: 0,
      backedUp: keep.paddedSize,
      hostReserved: keep.paddedSize,
    });
    await a.wake();
    expect(a.audit().map((e) => e.owner)).toEqual(['stays']);
    expect(() => a.free(w)).toThrow(InvalidArgumentError);
    a.free(keep);
  });

  it('out of memory at wake: typed error with tag and bytes, full rollback, retry works', async () => {
    const a = await make();
    const ws = [0, 1, 2, 3].map((i) => a.alloc(4096 * (i + 1), { tag: 'weights', owner: `w${i}` }));
    const data = ws.map((w) => randomBytes(w.size));
    for (const [i, w] of ws.entries()) await w.write(0, data[i]!);
    await a.sleep();
    a.injectMapFailure(2); // two maps succeed, the third fails
    const err = await a.wake().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutOfMemoryError);
    expect((err as OutOfMemoryError).tag).toBe('weights');
    expect((err as OutOfMemoryError).bytes).toBe(ws[2]!.paddedSize);
    expect(a.isAsleep('weights')).toBe(true);
    expect(a.stats().weights?.mapped).toBe(0); // what the failed wake mapped was unmapped again
    const padded = ws.reduce((n, w) => n + w.paddedSize, 0);
    expect(a.stats().weights?.backedUp).toBe(padded); // backups kept for the retry
    await a.wake();
    for (const [i, w] of ws.entries()) expect(sha(await w.read(0, w.size))).toBe(sha(data[i]!));
  });

  it('odd sizes round-trip byte-exact', async () => {
    const a = await make();
    const sizes = [1, 3, 4095, 4097, 65_537, 1_000_003];
    const allocs = sizes.map((n) => a.alloc(n, { tag: 'weights', owner: `odd${n}` }));
    const data = sizes.map((n) => randomBytes(n));
    for (const [i, al] of allocs.entries()) await al.write(0, data[i]!);
    for (let c = 0; c < 3; c++) {
      await a.sleep();
      await a.wake();
    }
    for (const [i, al] of allocs.entries()) {
      expect(al.paddedSize % a.granularity).toBe(0);
      expect(sha(await al.read(0, al.size))).toBe(sha(data[i]!));
    }
    await expect(allocs[0]!.read(0, 2)).rejects.toThrow('Expected a range inside 1 bytes');
  });

  it('runs onSleep/onWake hooks in order; a failing hook fails the call', async () => {
    const a = await make();
    a.alloc(64, { tag: 'kv_cache' });
    const order: string[] = [];
    a.onSleep('kv_cache', () => order.push('sleep1'));
    a.onSleep('kv_cache', async () => {
      await new Promise((r) => setTimeout(r, 10));
      order.push('sleep2');
    });
    a.onWake('kv_cache', () => order.push('wake1'));
    a.onWake('kv_cache', () => order.push('wake2'));
    await a.sleep({ tags: ['kv_cache'] });
    await a.wake({ tags: ['kv_cache'] });
    expect(order).toEqual(['sleep1', 'sleep2', 'wake1', 'wake2']);
    a.onSleep('activations', () => {
      throw new Error('hook refused');
    });
    await expect(a.sleep({ tags: ['activations'] })).rejects.toThrow('hook refused');
    expect(a.isAsleep('activations')).toBe(false);
  });

  it('barrier callbacks: a failing one leaves everything awake; a slow one is waited for; a hung one times out', async () => {
    const a = await make({ barrierTimeoutMs: 300 });
    const w = a.alloc(4096, { tag: 'weights' });
    const data = randomBytes(4096);
    await w.write(0, data);
    const phases: string[] = [];
    await expect(
      a.sleep({
        barrier: (phase) => {
          phases.push(phase);
          throw new Error('rank 3 not ready');
        },
      }),
    ).rejects.toThrow('rank 3 not ready');
    expect(phases).toEqual(['before']);
    expect(a.isAsleep('weights')).toBe(false);
    expect(sha(await w.read(0, 4096))).toBe(sha(data));

    const t0 = Date.now();
    await a.sleep({
      barrier: async (phase, info) => {
        phases.push(`${info.op}:${phase}`);
        await new Promise((r) => setTimeout(r, 100));
      },
    });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(195);
    expect(phases.slice(1)).toEqual(['sleep:before', 'sleep:after']);

    const hung = a.wake({ barrier: () => new Promise(() => {}) });
    await expect(hung).rejects.toThrow(TimeoutError);
    expect(a.isAsleep('weights')).toBe(true);
    await a.wake();
    expect(sha(await w.read(0, 4096))).toBe(sha(data));
  });

  it('keepBackup: an unchanged tag sleeps without copying; a written one is copied again', async () => {
    const a = await make();
    a.defineTag('frozen', { onSleep: 'offload', keepBackup: true });
    const f = a.alloc(4096, { tag: 'frozen' });
    const v1 = randomBytes(4096);
    await f.write(0, v1);
    await a.sleep({ tags: ['frozen'] });
    await a.wake({ tags: ['frozen'] });
    expect(a.stats().frozen?.backedUp).toBe(f.paddedSize); // kept after wake
    // A device-side change that nobody declared: the kept backup wins (the documented contract).
    const s = Stream.create(DEVICE);
    s.fill(f.ptr, 4096, 0, 1);
    await s.synchronize();
    await a.sleep({ tags: ['frozen'] });
    await a.wake({ tags: ['frozen'] });
    expect(sha(await f.read(0, 4096))).toBe(sha(v1));
    // Written through the API (or markDirty): copied again.
    const v2 = randomBytes(4096);
    await f.write(0, v2);
    await a.sleep({ tags: ['frozen'] });
    await a.wake({ tags: ['frozen'] });
    expect(sha(await f.read(0, 4096))).toBe(sha(v2));
  });

  it('reuseHostMemory: false returns host memory at wake', async () => {
    const a = await make();
    a.defineTag('lean', { onSleep: 'offload', reuseHostMemory: false });
    const l = a.alloc(4096, { tag: 'lean' });
    const data = randomBytes(4096);
    await l.write(0, data);
    await a.sleep({ tags: ['lean'] });
    expect(a.stats().lean?.hostReserved).toBe(l.paddedSize);
    await a.wake({ tags: ['lean'] });
    expect(a.stats().lean?.hostReserved).toBe(0);
    expect(sha(await l.read(0, 4096))).toBe(sha(data));
  });

  it('reserveBackups pins host memory ahead of the first sleep', async () => {
    const a = await make();
    const w = a.alloc(10_000, { tag: 'weights' });
    const data = randomBytes(10_000);
    await w.write(0, data);
    await a.reserveBackups();
    expect(a.stats().weights).toMatchObject({ backedUp: 0, hostReserved: w.paddedSize });
    await a.sleep();
    expect(a.stats().weights).toMatchObject({ backedUp: w.paddedSize, hostReserved: w.paddedSize });
    await a.wake();
    expect(sha(await w.read(0, w.size))).toBe(sha(data));
    await expect(a.reserveBackups({ tags: ['nope'] })).rejects.toThrow(InvalidArgumentError);
  });

  it('offloads to disk', async () => {
    const a = await make();
    a.defineTag('cold', { onSleep: 'offload', offloadTo: 'disk' });
    const c = a.alloc(200_001, { tag: 'cold' });
    const data = randomBytes(200_001);
    await c.write(0, data);
    await a.sleep({ tags: ['cold'] });
    expect(a.stats().cold).toEqual({
      allocated: 200_001,
      mapped: 0,
      backedUp: c.paddedSize,
      hostReserved: 0,
    });
    await a.wake({ tags: ['cold'] });
    expect(sha(await c.read(0, c.size))).toBe(sha(data));
    expect(a.stats().cold?.backedUp).toBe(0);
  });

  it('stats and audit describe every allocation', async () => {
    const a = await make();
    const w = a.alloc(5000, { tag: 'weights', owner: 'embed' });
    a.alloc(100, { tag: 'meta', owner: 'block_table' });
    expect(a.stats().weights).toEqual({
      allocated: 5000,
      mapped: w.paddedSize,
      backedUp: 0,
      hostReserved: 0,
    });
    await a.sleep({ tags: ['weights'] });
    expect(a.audit()).toEqual([
      {
        ptr: w.ptr,
        size: 5000,
        paddedSize: w.paddedSize,
        tag: 'weights',
        owner: 'embed',
        state: 'asleep',
        backedUp: true,
      },
      expect.objectContaining({
        owner: 'block_table',
        tag: 'meta',
        state: 'awake',
        backedUp: false,
      }),
    ]);
  });

  it('tensors over allocations work with stream operations', async () => {
    const a = await make();
    const x = a.alloc(64, { tag: 'activations' });
    const t = x.tensor('f32', [4, 4]);
    expect(t.ptr).toBe(x.ptr);
    const s = Stream.create(DEVICE);
    s.fill(t.slice(0, 2, 4).ptr, 32, 0x3f800000, 4); // rows 2..3 = 1.0f
    await s.synchronize();
    const f = new Float32Array((await x.read(0, 64)).buffer);
    expect([...f.slice(8)]).toEqual(new Array(8).fill(1));
    expect(() => x.tensor('f32', [5, 4])).toThrow(InvalidArgumentError);
  });
  it('1,000 tight wake→sleep cycles keep offloaded contents exact', async () => {
    const a = await Allocator.create({ device: DEVICE });
    const ws = [16 * 1024, 16 * 1024 + 5].map((n, i) =>
      a.alloc(n, { tag: 'weights', owner: `w${i}` }),
    );
    const data = ws.map((w) => randomBytes(w.size));
    for (const [i, w] of ws.entries()) await w.write(0, data[i]!);
    const want = data.map(sha);
    await a.sleep();
    for (let c = 0; c < 1000; c++) {
      // Not awaited in between: the allocator serializes, and wake must finish restores first.
      const woke = a.wake();
      const slept = a.sleep();
      await Promise.all([woke, slept]);
      if (c % 100 === 99) {
        await a.wake();
        for (const [i, w] of ws.entries()) expect(sha(await w.read(0, w.size))).toBe(want[i]);
        await a.sleep();
      }
    }
    await a.wake();
    for (const [i, w] of ws.entries()) expect(sha(await w.read(0, w.size))).toBe(want[i]);
    await a.dispose();
  }, 60_000);

  it('two allocators in one process sleep independently', async () => {
    const a = await Allocator.create({ device: DEVICE });
    const b = await Allocator.create({ device: DEVICE });
    const wa = a.alloc(4096, { tag: 'weights' });
    const wb = b.alloc(4096, { tag: 'weights' });
    const da = randomBytes(4096);
    const db = randomBytes(4096);
    await wa.write(0, da);
    await wb.write(0, db);
    await a.sleep();
    expect(wb.state).toBe('awake');
    expect(sha(await wb.read(0, 4096))).toBe(sha(db));
    await a.wake();
    expect(sha(await wa.read(0, 4096))).toBe(sha(da));
    await a.dispose();
    await b.dispose();
  });
});
