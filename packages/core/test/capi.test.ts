// The C function table, exercised from a second addon that links nothing of @x/core.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import {
  AsleepError,
  CAPI_VERSION,
  capi,
  Event,
  HostBuffer,
  Stream,
  StreamError,
} from '../src/index.js';
import { capiTestAddonPath } from '../src/testing.js';

interface CapiTest {
  version(api: bigint): { version: number; size: number; expectedSize: number };
  enqueueCopyWord(api: bigint, stream: bigint, src: bigint, dst: bigint, add: number): void;
  enqueueFailure(api: bigint, stream: bigint): void;
  cleanups(): number;
  recordAndSync(api: bigint, stream: bigint, timeoutMs: number): boolean;
  waitEvent(api: bigint, stream: bigint, event: bigint): void;
  registerRange(api: bigint, device: number, base: bigint, size: bigint, owner: string): void;
  setRangeState(api: bigint, device: number, base: bigint, state: 0 | 1 | 2): void;
  unregisterRange(api: bigint, device: number, base: bigint): void;
  checkRange(api: bigint, device: number, ptr: bigint, size: bigint): number;
  useRange(api: bigint, stream: bigint, ptr: bigint, size: bigint): number;
}

const addon = createRequire(import.meta.url)(capiTestAddonPath()) as CapiTest;
const api = capi();

describe('x_core_api (C function table) from a second addon', () => {
  it('is versioned and sized', () => {
    const v = addon.version(api);
    expect(v.version).toBe(CAPI_VERSION);
    expect(v.size).toBe(v.expectedSize);
  });

  it('runs host functions in stream order, after slow work, and cleans each up once', async () => {
    const s = Stream.create('cpu', { recordOps: true });
    const buf = HostBuffer.alloc(16);
    buf.bytes.fill(0);
    const before = addon.cleanups();
    s.delay(100).fill(buf.ptr, 4, 41, 4); // word 0 = 41, written late
    addon.enqueueCopyWord(api, s.nativeHandle, buf.ptr, buf.ptr + 4n, 1); // word 1 = word 0 + 1
    await s.synchronize();
    const words = new Uint32Array(buf.buffer);
    expect(words[1]).toBe(42);
    expect(addon.cleanups()).toBe(before + 1);
    expect(s.completedOps()).toEqual(['delay', 'fill', 'capi_test.copyWord']);
  });

  it('orders a table-enqueued host function after a JS-recorded event on another stream', async () => {
    const a = Stream.create('cpu');
    const b = Stream.create('cpu');
    const buf = HostBuffer.alloc(8);
    buf.bytes.fill(0);
    a.delay(100).fill(buf.ptr, 4, 7, 4);
    const e = a.record();
    addon.waitEvent(api, b.nativeHandle, e.nativeHandle);
    addon.enqueueCopyWord(api, b.nativeHandle, buf.ptr, buf.ptr + 4n, 100);
    await b.synchronize();
    expect(new Uint32Array(buf.buffer)[1]).toBe(107);
  });

  it('creates, records and synchronizes events through the table', () => {
    const s = Stream.create('cpu');
    s.delay(50);
    expect(addon.recordAndSync(api, s.nativeHandle, 5000)).toBe(true);
  });

  it('reports a failing host function at the next synchronize, once', async () => {
    const s = Stream.create('cpu');
    addon.enqueueFailure(api, s.nativeHandle);
    const later = Event.create('cpu').record(s);
    await expect(later.wait()).rejects.toThrow(StreamError);
    await expect(s.synchronize()).rejects.toThrow(
      /host function 'capi_test.fail' failed with status 7/,
    );
    await expect(s.synchronize()).resolves.toBeUndefined();
  });

  it('lets another addon register memory, put it to sleep, and have streams refuse it', async () => {
    const host = HostBuffer.alloc(64);
    // Reuse the buffer's bytes under a second owner on a pretend device so nothing overlaps.
    const device = 5;
    addon.registerRange(api, device, 0x7000_0000n, 4096n, 'cumem(kv_cache)');
    expect(addon.checkRange(api, device, 0x7000_0010n, 16n)).toBe(0);
    addon.setRangeState(api, device, 0x7000_0000n, 0);
    expect(addon.checkRange(api, device, 0x7000_0010n, 16n)).toBe(5); // X_ERR_ASLEEP
    expect(addon.checkRange(api, device, 0x9000_0000n, 16n)).toBe(1); // unknown memory
    addon.unregisterRange(api, device, 0x7000_0000n);

    // The same on the CPU device, where streams check the registry: asleep memory is refused.
    const s = Stream.create('cpu');
    addon.setRangeState(api, -1, host.ptr, 0);
    expect(() => s.fill(host.ptr, 64, 0, 1)).toThrow(AsleepError);
    addon.setRangeState(api, -1, host.ptr, 1);
    s.fill(host.ptr, 64, 3, 1);
    await s.synchronize();
    expect(host.bytes[63]).toBe(3);
  });

  it('stream_use_range: a CPU stream accepts memory x manages, refuses unknown or sleeping memory', () => {
    const host = HostBuffer.alloc(64);
    const s = Stream.create('cpu');
    expect(addon.useRange(api, s.nativeHandle, host.ptr + 8n, 56n)).toBe(0);
    expect(addon.useRange(api, s.nativeHandle, host.ptr + 8n, 57n)).toBe(1); // runs past the end
    expect(addon.useRange(api, s.nativeHandle, 0x10n, 8n)).toBe(1); // unknown
    expect(addon.useRange(api, s.nativeHandle, 0x10n, 0n)).toBe(0); // empty ranges are fine
    addon.setRangeState(api, -1, host.ptr, 0);
    expect(addon.useRange(api, s.nativeHandle, host.ptr, 8n)).toBe(5); // X_ERR_ASLEEP
    addon.setRangeState(api, -1, host.ptr, 1);
  });

  it('draining memory: queued work still completes, new work is refused', async () => {
    const host = HostBuffer.alloc(64);
    host.bytes.fill(0);
    const s = Stream.create('cpu');
    s.delay(100).fill(host.ptr, 64, 0x33, 1); // queued before the drain starts
    addon.setRangeState(api, -1, host.ptr, 2); // X_RANGE_DRAINING
    expect(() => s.fill(host.ptr, 64, 0x44, 1)).toThrow(AsleepError);
    await s.synchronize();
    expect(host.bytes[0]).toBe(0x33);
    addon.setRangeState(api, -1, host.ptr, 1);
  });
});
