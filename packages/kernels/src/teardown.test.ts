// CPU kernels in flight when their worker thread dies: the kernels' memory stays mapped until each
// running kernel returned (the binding enqueues kernels with the ranges they touch), kernels queued
// behind are dropped, and the addon (whose thread pool outlives the worker) stays loaded. Each case
// runs in a child process whose exit code and signal are checked (a segfault shows as SIGSEGV).

import { runNodeChild } from '@x/core/testing';
import { describe, expect, it } from 'vitest';

const coreEntry = import.meta.resolve('@x/core');
const kernelsEntry = new URL('../dist/index.js', import.meta.url).href;

// A worker enqueues 40 matmuls (256 x 1024 · 1024 x 1024, f32) on host buffers, reports whether
// they are still running, then ends the way `end` says.
const workerBody = (end: string) => `
(async () => {
  const { parentPort } = await import('node:worker_threads');
  const core = await import(${JSON.stringify(coreEntry)});
  const k = await import(${JSON.stringify(kernelsEntry)});
  const s = core.Stream.create('cpu');
  const t = (rows, cols) => {
    const b = core.HostBuffer.alloc(rows * cols * 4);
    new Float32Array(b.buffer).fill(0.5);
    return new core.Tensor({ ptr: b.ptr, dtype: 'f32', shape: [rows, cols], device: 'cpu' });
  };
  const a = t(256, 1024), w = t(1024, 1024), out = t(256, 1024);
  for (let i = 0; i < 40; i++) k.matmul(s, out, a, w);
  const e = s.record();
  s.synchronize().catch(() => {});
  parentPort.postMessage({ inFlight: !e.query() });
  ${end}
})();
`;

const parentScript = (end: string, onMessage: string) => `
import { Worker } from 'node:worker_threads';
const seen = [];
for (let i = 0; i < 3; i++) {
  const w = new Worker(${JSON.stringify(workerBody(end))}, { eval: true });
  w.on('error', () => {});
  const round = { inFlight: false, exitCode: null };
  w.on('message', (m) => { round.inFlight = m.inFlight; ${onMessage} });
  round.exitCode = await new Promise((r) => w.once('exit', r));
  seen.push(round);
}
console.log(JSON.stringify(seen));
`;

describe('kernels in flight at worker teardown', () => {
  for (const [name, end, onMessage] of [
    ['throws', "throw new Error('boom');", ''],
    ['is terminated', 'setInterval(() => {}, 1000);', 'w.terminate();'],
  ] as const) {
    it(`a worker that ${name} while its matmuls run`, async () => {
      const r = await runNodeChild(parentScript(end, onMessage));
      expect({ signal: r.signal, code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({
        signal: null,
        code: 0,
        stderr: '',
      });
      const rounds = JSON.parse(r.stdout.trim()) as Array<{ inFlight: boolean; exitCode: number }>;
      expect(rounds).toEqual(Array(3).fill({ inFlight: true, exitCode: 1 }));
    });
  }
});
