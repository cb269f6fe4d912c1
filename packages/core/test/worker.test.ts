// Streams used from worker threads: each thread's stream is its own; a worker that exits with work
// still queued stops its streams without disturbing the main thread's.
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { HostBuffer, Stream } from '../src/index.js';

const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
import(workerData.entry).then(async (core) => {
  const s = core.Stream.create('cpu');
  const b = core.HostBuffer.alloc(8);
  s.fill(b.ptr, 8, 0x11, 1);
  await s.synchronize();
  parentPort.postMessage(b.bytes[0]);
  s.delay(60_000); // left queued: the worker's teardown must stop it
  process.exit(0);
});
`;

describe('streams across worker threads', () => {
  it('a worker exiting with queued work neither hangs nor disturbs other streams', async () => {
    const main = Stream.create('cpu');
    const buf = HostBuffer.alloc(8);
    main.delay(200);
    const entry = new URL('../dist/index.js', import.meta.url).href;
    const worker = new Worker(workerSource, { eval: true, workerData: { entry } });
    const value = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    expect(value).toBe(0x11);
    const t0 = Date.now();
    const code = await new Promise<number>((resolve) => worker.once('exit', resolve));
    expect(code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5000);
    main.fill(buf.ptr, 8, 0x22, 1);
    await main.synchronize({ timeoutMs: 5000 });
    expect(buf.bytes[7]).toBe(0x22);
  });
});
