import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { DisposedError, InvalidArgumentError, NoDeviceError, TimeoutError } from './errors.js';
import { HostBuffer } from './host-buffer.js';
import { Event, Stream } from './stream.js';

describe('CPU streams', () => {
  it('runs two streams concurrently on their own threads', async () => {
    const a = Stream.create('cpu');
    const b = Stream.create('cpu');
    const t0 = performance.now();
    a.delay(400);
    b.delay(400);
    const enqueueMs = performance.now() - t0;
    await Promise.all([a.synchronize(), b.synchronize()]);
    const total = performance.now() - t0;
    expect(enqueueMs).toBeLessThan(50); // enqueue returns at once
    expect(total).toBeGreaterThanOrEqual(395);
    expect(total).toBeLessThan(750); // serial execution would take >= 800 ms
    a.dispose();
    b.dispose();
  });

  it('orders work across streams with an event: B reads what slow A wrote', async () => {
    const a = Stream.create('cpu');
    const b = Stream.create('cpu');
    const buf = HostBuffer.alloc(4096);
    buf.bytes.fill(0);
    const written = Event.create('cpu');
    a.delay(150).fill(buf.ptr, 2048, 0x5a, 1);
    written.record(a);
    b.waitEvent(written).copy(buf.ptr + 2048n, buf.ptr, 2048);
    expect(written.query()).toBe(false);
    await b.synchronize();
    expect(written.query()).toBe(true);
    expect(buf.bytes.subarray(2048).every((v) => v === 0x5a)).toBe(true);
    buf.dispose();
  });

  it('without the event the same copy races ahead and reads zeros', async () => {
    const a = Stream.create('cpu');
    const b = Stream.create('cpu');
    const buf = HostBuffer.alloc(64);
    buf.bytes.fill(0);
    a.delay(150).fill(buf.ptr, 32, 0x5a, 1);
    b.copy(buf.ptr + 32n, buf.ptr, 32);
    await b.synchronize();
    expect(buf.bytes[40]).toBe(0);
    await a.synchronize();
    expect(buf.bytes[0]).toBe(0x5a);
  });

  it('fills with 2, 4 and 8 byte patterns, little endian', async () => {
    const s = Stream.create('cpu');
    const buf = HostBuffer.alloc(48);
    s.fill(buf.ptr, 16, 0xbeef, 2)
      .fill(buf.ptr + 16n, 16, 0xdeadbeef, 4)
      .fill(buf.ptr + 32n, 16, 0x0102030405060708n, 8);
    await s.synchronize();
    const dv = new DataView(buf.buffer);
    expect(dv.getUint16(14, true)).toBe(0xbeef);
    expect(dv.getUint32(28, true)).toBe(0xdeadbeef);
    expect(dv.getBigUint64(40, true)).toBe(0x0102030405060708n);
  });

  it('await event.wait() keeps the event loop responsive', async () => {
    const s = Stream.create('cpu');
    s.delay(300);
    const e = s.record();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    await e.wait();
    clearInterval(timer);
    expect(ticks).toBeGreaterThanOrEqual(10);
    expect(e.query()).toBe(true);
  });

  it('an event that was never recorded is complete', async () => {
    const e = Event.create('cpu');
    expect(e.query()).toBe(true);
    await e.wait({ timeoutMs: 1000 });
    const s = Stream.create('cpu');
    const buf = HostBuffer.alloc(8);
    s.waitEvent(e).fill(buf.ptr, 8, 1, 1);
    await s.synchronize({ timeoutMs: 1000 });
    expect(buf.bytes[7]).toBe(1);
  });

  it('times out a wait with TimeoutError naming the operation', async () => {
    const s = Stream.create('cpu');
    s.delay(2000);
    const err = await s.synchronize({ timeoutMs: 50 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as TimeoutError).operation).toBe('stream.synchronize');
    expect((err as TimeoutError).timeoutMs).toBe(50);
    expect(() => s.synchronizeSync({ timeoutMs: 20 })).toThrow(TimeoutError);
    s.dispose();
  });

  it('measures elapsed time between timing events', async () => {
    const s = Stream.create('cpu');
    const start = s.record(Event.create('cpu', { timing: true }));
    s.delay(100);
    const end = s.record(Event.create('cpu', { timing: true }));
    await end.wait();
    const ms = start.elapsedTime(end);
    expect(ms).toBeGreaterThanOrEqual(95);
    expect(ms).toBeLessThan(1000);
    expect(() => start.elapsedTime(Event.create('cpu'))).toThrow(InvalidArgumentError);
  });

  it('records completed operations when asked', async () => {
    const s = Stream.create('cpu', { recordOps: true });
    const buf = HostBuffer.alloc(16);
    s.fill(buf.ptr, 16, 0, 1).copy(buf.ptr, buf.ptr + 8n, 8);
    s.record();
    await s.synchronize();
    expect(s.completedOps()).toEqual(['fill', 'copy', 'event.record']);
  });

  it('refuses memory it does not manage instead of faulting', () => {
    const s = Stream.create('cpu');
    expect(() => s.copy(0x10n, 0x20n, 4)).toThrow(/not memory x manages on cpu/);
    const buf = HostBuffer.alloc(16);
    expect(() => s.fill(buf.ptr, 32, 0, 1)).toThrow(/runs past the end of its allocation/);
  });

  it('rejects bad arguments with InvalidArgumentError naming each one', async () => {
    const s = Stream.create('cpu');
    const buf = HostBuffer.alloc(16);
    const cases: Array<[() => unknown, string]> = [
      [
        () => Stream.create('gpu' as 'cpu'),
        'Expected "cpu" or "cuda:N" for device but received "gpu"',
      ],
      [
        () => s.copy(5 as unknown as bigint, buf.ptr, 4),
        'Expected a non-null address (bigint) for dst but received 5',
      ],
      [
        () => s.copy(buf.ptr, buf.ptr, -1),
        'Expected an integer >= 0 for byteLength but received -1',
      ],
      [() => s.fill(buf.ptr, 16, 1, 3 as 1), 'Expected one of 1, 2, 4, 8 for width but received 3'],
      [
        () => s.fill(buf.ptr, 6, 1, 4),
        'Expected a multiple of width 4 for byteLength but received 6',
      ],
      [
        () => s.fill(buf.ptr, 16, 256, 1),
        'Expected an integer in [0, 255] for value but received 256',
      ],
      [
        () => s.delay(Number.NaN),
        'Expected a finite number of milliseconds >= 0 for ms but received NaN',
      ],
      [
        () => s.synchronize({ timeoutMs: -1 }),
        'Expected a positive number of milliseconds or Infinity for timeoutMs',
      ],
      [() => HostBuffer.alloc(0), 'Expected an integer >= 1 for byteLength but received 0'],
      [() => s.waitEvent({} as Event), 'Expected an Event for event but received object'],
    ];
    for (const [fn, message] of cases) {
      let caught: unknown;
      try {
        await fn(); // async methods reject, sync ones throw: both must carry the typed error
      } catch (e) {
        caught = e;
      }
      expect(caught, message).toBeInstanceOf(InvalidArgumentError);
      expect((caught as Error).message).toContain(message);
    }
  });

  it('refuses work after dispose with DisposedError; dispose lets queued work finish', async () => {
    const s = Stream.create('cpu');
    const buf = HostBuffer.alloc(8);
    const done = Event.create('cpu');
    s.delay(50).fill(buf.ptr, 8, 9, 1);
    done.record(s);
    s.dispose();
    s.dispose();
    expect(() => s.delay(1)).toThrow(DisposedError);
    await done.wait();
    expect(buf.bytes[0]).toBe(9);
  });

  it('HostBuffer.dispose detaches every view and frees the range', async () => {
    const buf = HostBuffer.alloc(32);
    const view = buf.bytes;
    const ptr = buf.ptr;
    buf.dispose();
    expect(view.length).toBe(0);
    expect(() => buf.bytes).toThrow(DisposedError);
    const s = Stream.create('cpu');
    expect(() => s.fill(ptr, 8, 0, 1)).toThrow(/not memory x manages/);
  });

  it('names a missing device with NoDeviceError', () => {
    expect(() => Stream.create('cuda:63')).toThrow(NoDeviceError);
    expect(() => Event.create('cuda:63')).toThrow(/cuda:63|CUDA is unavailable/);
    expect(() => HostBuffer.alloc(8, { device: 'cuda:63' })).toThrow(NoDeviceError);
  });
});
