// Teardown with CPU stream work in flight never crashes the process: a worker thread that throws,
// is terminated or calls process.exit while its streams still copy into its host buffers, and the
// main thread exiting (process.exit or the end of the script) with work queued. Each case runs in a
// child process whose exit code and signal are checked (a segfault shows as signal SIGSEGV).
import { describe, expect, it } from 'vitest';
import { type NodeChildResult, runNodeChild } from './testing.js';

const entry = new URL('../dist/index.js', import.meta.url).href;

/** The last line of the child's stdout, parsed as JSON. */
function report(r: NodeChildResult): Record<string, unknown> {
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1] ?? 'null') as Record<string, unknown>;
}

// Worker body: 20 copies of 64 MiB between two host buffers, an event after them, a pending
// synchronize (its completion arrives after the environment is gone), then `end` runs.
// (Module or script: workers inherit the child's --input-type=module.)
const workerBody = (end: string) => `
(async () => {
  const { parentPort } = await import('node:worker_threads');
  const core = await import(${JSON.stringify(entry)});
  const s = core.Stream.create('cpu');
  const n = 64 << 20;
  const a = core.HostBuffer.alloc(n);
  const b = core.HostBuffer.alloc(n);
  for (let i = 0; i < 20; i++) s.copy(a.ptr, b.ptr, n);
  const e = s.record();
  s.synchronize().catch(() => {});
  parentPort.postMessage({ inFlight: !e.query() });
  ${end}
})();
`;

// Parent: runs `rounds` workers one after the other; `onMessage` reacts to the worker's report.
// Then checks that its own stream still works, and prints what it saw.
const parentScript = (end: string, onMessage: string, rounds = 3) => `
import { Worker } from 'node:worker_threads';
const core = await import(${JSON.stringify(entry)});
const seen = [];
for (let i = 0; i < ${rounds}; i++) {
  const w = new Worker(${JSON.stringify(workerBody(end))}, { eval: true });
  w.on('error', () => {});
  const round = { inFlight: false, exitCode: null };
  w.on('message', (m) => { round.inFlight = m.inFlight; ${onMessage} });
  round.exitCode = await new Promise((r) => w.once('exit', r));
  seen.push(round);
}
const s = core.Stream.create('cpu');
const buf = core.HostBuffer.alloc(8);
s.fill(buf.ptr, 8, 0x5a, 1);
await s.synchronize({ timeoutMs: 10000 });
console.log(JSON.stringify({ seen, fill: buf.bytes[7] }));
`;

function expectRounds(r: NodeChildResult, exitCode: number): void {
  expect({ signal: r.signal, code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({
    signal: null,
    code: 0,
    stderr: '',
  });
  const out = report(r) as { seen: Array<{ inFlight: boolean; exitCode: number }>; fill: number };
  expect(out.fill).toBe(0x5a);
  for (const round of out.seen) expect(round).toEqual({ inFlight: true, exitCode });
}

describe('teardown with CPU stream work in flight', () => {
  it('a worker that throws while its stream copies between its host buffers', async () => {
    const r = await runNodeChild(parentScript("throw new Error('boom');", ''));
    expectRounds(r, 1);
  });

  it('a worker terminated (worker.terminate()) mid-stream', async () => {
    const r = await runNodeChild(parentScript('setInterval(() => {}, 1000);', 'w.terminate();'));
    expectRounds(r, 1);
  });

  it('a worker that calls process.exit() with copies in flight', async () => {
    const r = await runNodeChild(parentScript('process.exit(5);', ''));
    expectRounds(r, 5);
  });

  it('process.exit() on the main thread while its streams and a worker still copy', async () => {
    const r = await runNodeChild(`
import { Worker } from 'node:worker_threads';
const core = await import(${JSON.stringify(entry)});
const s = core.Stream.create('cpu');
const n = 64 << 20;
const a = core.HostBuffer.alloc(n);
const b = core.HostBuffer.alloc(n);
for (let i = 0; i < 20; i++) s.copy(a.ptr, b.ptr, n);
const e = s.record();
s.synchronize().catch(() => {});
const w = new Worker(${JSON.stringify(workerBody('setInterval(() => {}, 1000);'))}, { eval: true });
w.on('message', (m) => {
  console.log(JSON.stringify({ main: !e.query(), worker: m.inFlight }));
  process.exit(7);
});
`);
    expect({ signal: r.signal, code: r.code }).toEqual({ signal: null, code: 7 });
    expect(report(r)).toEqual({ main: true, worker: true });
  });

  it('the main thread reaching its end with copies queued (environment teardown)', async () => {
    const r = await runNodeChild(`
const core = await import(${JSON.stringify(entry)});
const s = core.Stream.create('cpu');
const n = 64 << 20;
const a = core.HostBuffer.alloc(n);
const b = core.HostBuffer.alloc(n);
for (let i = 0; i < 20; i++) s.copy(a.ptr, b.ptr, n);
const e = s.record();
s.synchronize().catch(() => {});
console.log(JSON.stringify({ inFlight: !e.query() }));
`);
    expect({ signal: r.signal, code: r.code }).toEqual({ signal: null, code: 0 });
    expect(report(r)).toEqual({ inFlight: true });
  });

  it('HostBuffer.dispose() while a copy runs into it: the copy finishes, queued ones fail', async () => {
    const r = await runNodeChild(`
const core = await import(${JSON.stringify(entry)});
const s = core.Stream.create('cpu');
const n = 256 << 20;
const a = core.HostBuffer.alloc(n);
const b = core.HostBuffer.alloc(n);
const started = s.record();
for (let i = 0; i < 4; i++) s.copy(a.ptr, b.ptr, n);
const end = Date.now() + 10000;
while (!started.query() && Date.now() < end) await new Promise((r) => setTimeout(r, 0));
a.dispose();
b.dispose();
const err = await s.synchronize({ timeoutMs: 10000 }).then(() => null, (e) => e.code);
console.log(JSON.stringify({ err }));
`);
    expect({ signal: r.signal, code: r.code }).toEqual({ signal: null, code: 0 });
    expect(report(r)).toEqual({ err: 'X_INVALID_ARGUMENT' });
  });
});
