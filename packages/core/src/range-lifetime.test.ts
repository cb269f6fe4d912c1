// Memory released while a CPU stream operation still runs on it goes back only once the operation
// returned; operations queued behind that name it are cancelled. Exercised through the C table
// (stream_enqueue_host_ranges, retire_range) from the test addon, and through HostBuffer.dispose.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { capi, HostBuffer, Stream } from './index.js';
import { capiTestAddonPath, registeredRanges } from './testing.js';

interface LifetimeAddon {
  allocRegion(api: bigint, bytes: number): bigint;
  enqueueSlowWrite(
    api: bigint,
    stream: bigint,
    ptr: bigint,
    bytes: number,
    ms: number,
    value: number,
  ): void;
  retireRegion(api: bigint, ptr: bigint, bytes: number): boolean;
  lifetimeState(): {
    started: number;
    done: number;
    cleanups: number;
    releases: number;
    doneAtRelease: number;
  };
}

const addon = createRequire(import.meta.url)(capiTestAddonPath()) as LifetimeAddon;
const api = capi();

/** Resolves once `cond` holds; rejects after `timeoutMs`. */
async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe('memory lifetime under running stream work', () => {
  it('a range retired while a host function writes it is released after the function returned; queued work on it is cancelled', async () => {
    const s = Stream.create('cpu');
    const bytes = 1 << 16;
    const region = addon.allocRegion(api, bytes);
    const start = addon.lifetimeState();
    addon.enqueueSlowWrite(api, s.nativeHandle, region, bytes, 150, 1); // runs when retired
    addon.enqueueSlowWrite(api, s.nativeHandle, region, bytes, 0, 2); // still queued then
    await until(() => addon.lifetimeState().started === start.started + 1, 'the first write');

    const releasedAtOnce = addon.retireRegion(api, region, bytes);
    expect(releasedAtOnce).toBe(false); // the first write still runs on it
    expect(registeredRanges().some((r) => r.base === region)).toBe(false); // gone for new work

    const failure = await s.synchronize({ timeoutMs: 10_000 }).then(
      () => undefined,
      (e: unknown) => e as Error & { code: string },
    );
    expect(failure?.message).toMatch(
      /capi_test\.slowWrite not run: region .* is not memory x manages/,
    );
    const end = addon.lifetimeState();
    expect(end.started - start.started).toBe(1); // the queued write never ran...
    expect(end.cleanups - start.cleanups).toBe(2); // ...but both were cleaned up once
    expect(end.releases - start.releases).toBe(1);
    expect(end.doneAtRelease).toBe(start.done + 1); // released only after the first write returned
  });

  it('a range no operation uses is released before retire returns', () => {
    const bytes = 4096;
    const region = addon.allocRegion(api, bytes);
    const before = addon.lifetimeState().releases;
    expect(addon.retireRegion(api, region, bytes)).toBe(true);
    expect(addon.lifetimeState().releases).toBe(before + 1);
  });

  it('HostBuffer.dispose while a host function writes into it keeps the memory until it returned', async () => {
    const s = Stream.create('cpu');
    const buf = HostBuffer.alloc(1 << 20);
    const start = addon.lifetimeState().started;
    addon.enqueueSlowWrite(api, s.nativeHandle, buf.ptr, buf.byteLength, 150, 3);
    s.fill(buf.ptr, buf.byteLength, 0, 1); // queued behind it: cancelled by the dispose
    await until(() => addon.lifetimeState().started === start + 1, 'the write');
    buf.dispose(); // before the fix: munmap under the running memset (SIGSEGV)
    expect(registeredRanges().some((r) => r.base === buf.ptr)).toBe(false);
    await expect(s.synchronize({ timeoutMs: 10_000 })).rejects.toMatchObject({
      code: 'X_INVALID_ARGUMENT',
      message: expect.stringMatching(/fill destination .* is not memory x manages/),
    });
    // The stream still works afterwards.
    const other = HostBuffer.alloc(8);
    s.fill(other.ptr, 8, 0x5a, 1);
    await s.synchronize({ timeoutMs: 10_000 });
    expect(other.bytes[7]).toBe(0x5a);
  });
});
