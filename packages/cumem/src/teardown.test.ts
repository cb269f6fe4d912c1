// The allocator torn down, freed or put to sleep while CPU stream work still runs on its memory:
// memory is unmapped only once no stream operation uses it, whichever of @x/core's and @x/cumem's
// environment cleanups runs first. Each case runs in a child process whose exit code and signal
// are checked (a segfault shows as signal SIGSEGV).

import { type NodeChildResult, runNodeChild } from '@x/core/testing';
import { describe, expect, it } from 'vitest';

const coreEntry = import.meta.resolve('@x/core');
const cumemEntry = new URL('../dist/index.js', import.meta.url).href;

function lastJson(r: NodeChildResult): unknown {
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1] ?? 'null');
}

function expectClean(r: NodeChildResult, code = 0): void {
  expect({ signal: r.signal, code: r.code, stderr: r.code === code ? '' : r.stderr }).toEqual({
    signal: null,
    code,
    stderr: '',
  });
}

const imports = `
  const core = await import(${JSON.stringify(coreEntry)});
  const { Allocator } = await import(${JSON.stringify(cumemEntry)});`;

// A stream and an allocator with the stream registered, in either creation order: the order the
// addons load decides the order of their environment cleanup hooks. 20 copies of 128 MiB between
// two allocations are in flight when the worker ends the way `end` says.
const workerBody = (streamFirst: boolean, end: string) => `
(async () => {
  const { parentPort } = await import('node:worker_threads');
  ${imports}
  let s;
  if (${streamFirst}) s = core.Stream.create('cpu');
  const al = await Allocator.create({ device: 'cpu' });
  if (!s) s = core.Stream.create('cpu');
  al.registerStream(s);
  const n = 128 << 20;
  const x = al.alloc(n, { tag: 'weights' });
  const y = al.alloc(n, { tag: 'kv_cache' });
  for (let i = 0; i < 20; i++) s.copy(y.ptr, x.ptr, n);
  const e = s.record();
  s.synchronize().catch(() => {});
  parentPort.postMessage({ inFlight: !e.query() });
  ${end}
})();
`;

const parentScript = (streamFirst: boolean, end: string, onMessage: string) => `
import { Worker } from 'node:worker_threads';
const seen = [];
for (let i = 0; i < 3; i++) {
  const w = new Worker(${JSON.stringify(workerBody(streamFirst, end))}, { eval: true });
  w.on('error', () => {});
  const round = { inFlight: false, exitCode: null };
  w.on('message', (m) => { round.inFlight = m.inFlight; ${onMessage} });
  round.exitCode = await new Promise((r) => w.once('exit', r));
  seen.push(round);
}
console.log(JSON.stringify(seen));
`;

describe('allocator teardown with CPU stream work in flight', () => {
  const ends = [
    ['throws', "throw new Error('boom');", '', 1],
    ['is terminated', 'setInterval(() => {}, 1000);', 'w.terminate();', 1],
    ['calls process.exit(3)', 'process.exit(3);', '', 3],
  ] as const;
  for (const streamFirst of [true, false]) {
    for (const [name, end, onMessage, exitCode] of ends) {
      it(`a worker (stream created ${streamFirst ? 'before' : 'after'} the allocator) that ${name} mid-copy`, async () => {
        const r = await runNodeChild(parentScript(streamFirst, end, onMessage));
        expectClean(r);
        expect(lastJson(r)).toEqual(Array(3).fill({ inFlight: true, exitCode }));
      });
    }
  }

  it('a worker terminated while a sleep copies its weights out and a wake copies them back', async () => {
    const worker = `
(async () => {
  const { parentPort } = await import('node:worker_threads');
  ${imports}
  const al = await Allocator.create({ device: 'cpu' });
  const w = al.alloc(512 << 20, { tag: 'weights' });
  await al.reserveBackups(); // the sleep below only copies (and is in flight when terminated)
  for (let i = 0; ; i++) {
    const sleeping = al.sleep();
    if (i === 1) parentPort.postMessage('sleeping');
    await sleeping;
    await al.wake();
  }
})();
`;
    const r = await runNodeChild(`
import { Worker } from 'node:worker_threads';
const codes = [];
for (let i = 0; i < 3; i++) {
  const w = new Worker(${JSON.stringify(worker)}, { eval: true });
  w.on('error', (e) => console.error(String(e)));
  w.on('message', () => w.terminate());
  codes.push(await new Promise((r) => w.once('exit', r)));
}
console.log(JSON.stringify(codes));
`);
    expectClean(r);
    expect(lastJson(r)).toEqual([1, 1, 1]);
  });

  it('process.exit() on the main thread while copies between allocations run', async () => {
    const r = await runNodeChild(`
${imports}
const al = await Allocator.create({ device: 'cpu' });
const s = core.Stream.create('cpu');
al.registerStream(s);
const n = 128 << 20;
const x = al.alloc(n, { tag: 'weights' });
const y = al.alloc(n, { tag: 'kv_cache' });
for (let i = 0; i < 20; i++) s.copy(y.ptr, x.ptr, n);
const e = s.record();
s.synchronize().catch(() => {});
console.log(JSON.stringify({ inFlight: !e.query() }));
process.exit(9);
`);
    expectClean(r, 9);
    expect(lastJson(r)).toEqual({ inFlight: true });
  });

  // Sleep drains registered streams; an operation on a stream nobody registered is waited for
  // before the range is unmapped, and what is queued behind it fails as asleep.
  it('sleep while an unregistered stream copies into the tag: waits for the running copy', async () => {
    const r = await runNodeChild(`
${imports}
const al = await Allocator.create({ device: 'cpu' });
const s = core.Stream.create('cpu'); // not registered
const n = 256 << 20;
const x = al.alloc(n, { tag: 'weights' });
const kv = al.alloc(n, { tag: 'kv_cache' });
const started = s.record();
for (let i = 0; i < 4; i++) s.copy(kv.ptr, x.ptr, n);
const end = Date.now() + 10000;
while (!started.query() && Date.now() < end) await new Promise((r) => setTimeout(r, 0));
await al.sleep({ tags: ['kv_cache'] });
const err = await s.synchronize({ timeoutMs: 10000 }).then(() => null, (e) => e.code);
await al.wake();
s.copy(kv.ptr, x.ptr, n);
await s.synchronize({ timeoutMs: 10000 });
await al.dispose();
console.log(JSON.stringify({ err }));
`);
    expectClean(r);
    expect(lastJson(r)).toEqual({ err: 'X_ASLEEP' });
  });

  it('free() of an allocation a copy is running into: the copy finishes, queued ones fail', async () => {
    const r = await runNodeChild(`
${imports}
const al = await Allocator.create({ device: 'cpu' });
const s = core.Stream.create('cpu');
const n = 256 << 20;
const x = al.alloc(n, { tag: 'weights' });
const y = al.alloc(n, { tag: 'weights' });
const started = s.record();
for (let i = 0; i < 4; i++) s.copy(y.ptr, x.ptr, n);
const end = Date.now() + 10000;
while (!started.query() && Date.now() < end) await new Promise((r) => setTimeout(r, 0));
al.free(y);
const err = await s.synchronize({ timeoutMs: 10000 }).then(() => null, (e) => e.code);
await al.dispose();
console.log(JSON.stringify({ err }));
`);
    expectClean(r);
    expect(lastJson(r)).toEqual({ err: 'X_INVALID_ARGUMENT' });
  });
});
