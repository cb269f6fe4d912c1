// GPU checks of @x/comm's NCCL backend (Node alone, on the GPU machine):
//   node packages/comm/test/gpu/nccl.gpu.mjs
// Spawns one rank per visible GPU with @x/comm's launcher and checks NCCL all-reduce, broadcast,
// all-gather, reduce-scatter, send/recv, exchange and barrier against gloo on the same data, plus
// the watchdog. World size 1 still runs init / unique id / streams / watchdog; exchanges between
// ranks need 2 GPUs and are reported as not run otherwise. NCCL_NVLS_ENABLE=0 everywhere.
//
// Then the process-exit cases: one child rank (world size 1, cuda:0) per case ends abruptly (an
// uncaught exception, or process.exit(3)) while an NCCL group is live: an all-reduce pending behind
// a 5 s stream.delay, a watchdog that has just aborted the communicator (its abort still waiting
// for that delay to drain), or one whose abort has returned. Each child must end with its exit code,
// never a signal (SIGSEGV was the bug: exit() tore CUDA down under NCCL's threads). Every case
// prints what the child did, how it ended and what @x/comm's exit handler reported
// ("x/comm: ... still live at process exit ..." on the child's stderr).
//
// Layout: helpers are function declarations (hoisted), constants sit above the dispatch at the end
// of the file, so nothing the rank code uses is still in its temporal dead zone when the top-level
// await runs it.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CommError, devices, Stream, Tensor } from '../../../core/dist/index.js';
import { deviceAllocForTesting } from '../../../core/dist/testing.js';
import { Allocator } from '../../../cumem/dist/index.js';
import { initGroup, launch, Store, StoreServer } from '../../dist/index.js';

process.env.NCCL_NVLS_ENABLE = '0';
const SELF = fileURLToPath(import.meta.url);

// The process-exit cases. state: what the NCCL group is doing when the process ends; end: how it
// ends; with: 'comm' = only an NCCL group, a CUDA stream and raw device memory (cuMemAlloc);
// 'full' = as in the original crash, plus a gloo group and an @x/cumem Allocator allocation (so a
// failure only there points at core/cumem, not comm).
const EXIT_CASES = [
  { state: 'pending', end: 'throw', with: 'comm', code: 1 },
  { state: 'pending', end: 'exit', with: 'comm', code: 3 },
  { state: 'aborting', end: 'throw', with: 'comm', code: 1 },
  { state: 'aborting', end: 'exit', with: 'comm', code: 3 },
  { state: 'drained', end: 'throw', with: 'comm', code: 1 },
  { state: 'aborting', end: 'throw', with: 'full', code: 1 },
  { state: 'pending', end: 'exit', with: 'full', code: 3 },
  // A 500 ms exit budget: if ncclCommAbort waits for the 5 s delay, the handler takes its
  // fallback (_exit with the same status); either way the status must be 1.
  { state: 'pending', end: 'throw', with: 'comm', code: 1, env: { X_COMM_EXIT_TIMEOUT_MS: '500' } },
];

const STATES = {
  pending:
    'an all-reduce pending behind a 5 s stream.delay (group timeout 60 s: the watchdog is only polling)',
  aborting:
    'the watchdog has just failed the all-reduce behind a 5 s stream.delay (timeout 2 s) and is inside ncclCommAbort',
  drained: 'the watchdog aborted the communicator and the stream has drained (the abort returned)',
};
const ENDS = { throw: 'an uncaught exception (expect exit code 1)', exit: 'process.exit(3)' };

function caseName(c) {
  return `exit:${c.state}:${c.end}:${c.with}${c.env ? ':budget500' : ''}`;
}

function errorOf(e, t0) {
  return {
    name: e.name,
    op: e.op,
    rank: e.rank,
    peer: e.peer,
    timeoutMs: e.timeoutMs,
    message: e.message,
    ms: Date.now() - t0,
  };
}

// ---------------------------------- the test runner side ----------------------------------

async function runRanks(scenario, n, env = {}) {
  let out = '';
  const sink = new Writable({
    write(chunk, _enc, cb) {
      out += chunk;
      process.stdout.write(chunk);
      cb();
    },
  });
  const t0 = Date.now();
  const r = await launch({
    script: SELF,
    args: [scenario],
    nprocPerNode: n,
    env: { NCCL_NVLS_ENABLE: '0', ...env },
    stdout: sink,
    stderr: sink,
    graceMs: 5000,
    // A rank that hangs is torn down (SIGTERM, then SIGKILL) instead of hanging the run.
    signal: AbortSignal.timeout(120_000),
  });
  const results = new Map();
  for (const m of out.matchAll(/^\[rank (\d+)\] RESULT (.*)$/gm))
    results.set(Number(m[1]), JSON.parse(m[2]));
  return { ...r, results, out, ms: Date.now() - t0 };
}

function parentMain() {
  const gpus = devices().filter((d) => d.kind === 'cuda').length;
  console.log(`# ${gpus} visible GPU(s): world size ${gpus}`);
  const summary = [];
  after(() => {
    console.log('#');
    console.log(
      '# process-exit cases (child rank on cuda:0; expected: its exit code, never a signal)',
    );
    for (const row of summary) console.log(`#   ${row}`);
  });

  describe(`@x/comm NCCL on ${gpus} GPU(s)`, () => {
    it('collectives, p2p and barrier match gloo on the same data; the watchdog aborts an overdue op', async () => {
      assert.ok(gpus >= 1, 'no CUDA GPU visible');
      const r = await runRanks('checks', gpus);
      assert.equal(r.exitCode, 0, 'a rank failed (see its output above)');
      assert.equal(r.results.size, gpus);
      for (const [rank, res] of r.results) {
        assert.equal(res.ok, true);
        assert.equal(res.watchdog.name, 'CommError');
        assert.equal(res.watchdog.op, 'allReduce');
        assert.equal(res.watchdog.rank, rank);
        assert.equal(res.watchdog.timeoutMs, 2000);
        assert.ok(res.watchdog.ms < 2000 + 1500, `watchdog fired after ${res.watchdog.ms} ms`);
        assert.equal(
          res.after.name,
          'CommError',
          'a later call on the aborted group must fail at once',
        );
      }
    });
    it('a rank that never joins the collective: CommError on the other within timeoutMs', async (t) => {
      if (gpus < 2) {
        console.log(
          `# SKIP (not run): needs 2 GPUs, this machine has ${gpus}: a rank that never joins needs a second GPU`,
        );
        t.skip('needs 2 GPUs');
        return;
      }
      const r = await runRanks('nojoin', 2);
      assert.equal(r.exitCode, 0);
      const e = r.results.get(0);
      assert.equal(e.name, 'CommError');
      assert.equal(e.op, 'allReduce');
      assert.equal(e.rank, 0);
      assert.equal(e.timeoutMs, 3000);
      assert.ok(e.ms >= 2900 && e.ms < 3000 + 1500, `failed after ${e.ms} ms`);
    });
  });

  describe('process exit with an NCCL group live: exit code, never a signal', () => {
    for (const [i, c] of EXIT_CASES.entries()) {
      const name = caseName(c);
      it(`${name}: ${c.state}, then ${c.end === 'throw' ? 'an uncaught exception' : 'process.exit(3)'} -> exit code ${c.code}`, async () => {
        assert.ok(gpus >= 1, 'no CUDA GPU visible');
        console.log(`# ---- exit case ${i + 1}/${EXIT_CASES.length}: ${name}`);
        console.log(`#   state:    ${STATES[c.state]}`);
        console.log(
          `#   with:     ${c.with === 'comm' ? 'only comm state (NCCL group, CUDA stream, cuMemAlloc memory)' : 'also a gloo group and an @x/cumem allocation (as in the original crash)'}`,
        );
        console.log(`#   then:     ${ENDS[c.end]}${c.env ? `; env ${JSON.stringify(c.env)}` : ''}`);
        const r = await runRanks(name, 1, c.env ?? {});
        const f = r.failures[0] ?? { exitCode: r.exitCode, signal: null };
        const handler =
          /x\/comm: (.*still live at process exit.*)$/m.exec(r.out)?.[1] ??
          '(no x/comm exit line: nothing was live, or the process died before the handler ran)';
        const steps = [...r.out.matchAll(/^\[rank 0\] EXIT-STEP (.*)$/gm)].map((m) => m[1]);
        const ok =
          f.signal === null &&
          f.exitCode === c.code &&
          steps.length > 0 &&
          /ending the process/.test(steps.at(-1));
        const got =
          f.signal !== null
            ? `killed by ${f.signal}`
            : `exit code ${f.exitCode}${r.exitCode === 130 && r.failures.length === 0 ? ' (the 120 s limit tore it down: it hung)' : ''}`;
        console.log(
          `#   expected: exit code ${c.code}, no signal; got: ${got} after ${r.ms} ms -> ${ok ? 'PASS' : 'FAIL'}`,
        );
        console.log(`#   x/comm exit handler: ${handler}`);
        for (const s of steps) console.log(`#   child: ${s}`);
        summary.push(
          `${ok ? 'PASS' : 'FAIL'} ${name.padEnd(36)} expected code ${c.code}, got ${got} (${r.ms} ms)`,
        );
        assert.ok(
          steps.length > 0 && /ending the process/.test(steps.at(-1)),
          `${name}: the child did not reach the point where it ends the process (see its output above)`,
        );
        assert.equal(
          f.signal,
          null,
          `${name}: the child was killed by ${f.signal} instead of exiting with ${c.code}`,
        );
        assert.equal(f.exitCode, c.code, `${name}: exit code`);
      });
    }
  });
}

// ---------------------------------- the rank side ----------------------------------

async function rankMain(scenario) {
  const rank = Number(process.env.RANK);
  const size = Number(process.env.WORLD_SIZE);
  const device = `cuda:${process.env.LOCAL_RANK}`;
  const addr = process.env.MASTER_ADDR;
  const port = Number(process.env.MASTER_PORT);
  const server = rank === 0 ? StoreServer.listen(addr, port) : undefined;
  const store = await Store.connect(addr, port);
  if (scenario.startsWith('exit:')) {
    // Ends the process from inside, with everything live on purpose (no finally, no dispose).
    await exitCase(scenario, rank, size, device, store);
    return;
  }
  const mem = await Allocator.create({ device });
  const result = (v) => console.log(`RESULT ${JSON.stringify(v)}`);
  try {
    if (scenario === 'checks') result(await checks(rank, size, device, store, mem));
    if (scenario === 'nojoin') result(await nojoin(rank, device, store, mem));
  } finally {
    await mem.dispose();
    server?.close();
  }
}

async function exitCase(scenario, rank, size, device, store) {
  const [, state, end, flavour] = scenario.split(':');
  const t0 = Date.now();
  const step = (what) => console.log(`EXIT-STEP +${Date.now() - t0} ms ${what}`);
  let tensor;
  if (flavour === 'full') {
    const gloo = await initGroup({
      backend: 'gloo',
      rank,
      worldSize: size,
      store,
      jobId: 'exit-gloo',
    });
    await gloo.allReduce(new Float32Array(4));
    const mem = await Allocator.create({ device });
    const buf = mem.alloc(1 << 20, { tag: 'activations', owner: 'exit-case' });
    tensor = buf.tensor('f32', [16]);
    step('gloo group up, @x/cumem allocation made');
  } else {
    const ptr = deviceAllocForTesting(device, 1 << 20);
    tensor = new Tensor({ ptr, dtype: 'f32', shape: [16], device });
  }
  const w = await initGroup({
    backend: 'nccl',
    rank,
    worldSize: size,
    store,
    device,
    jobId: 'exit-nccl',
    timeoutMs: state === 'pending' ? 60_000 : 2000,
  });
  const s = Stream.create(device);
  step(`NCCL group up on ${device} (timeoutMs ${w.timeoutMs})`);
  s.delay(5000);
  w.allReduce(tensor, 'sum', s);
  step('all-reduce enqueued behind a 5 s stream.delay');
  if (state !== 'pending') {
    await w.wait().then(
      () => step('UNEXPECTED: wait() resolved although the all-reduce outlived its 2 s timeout'),
      (e) =>
        step(
          `wait() rejected after the watchdog fired: ${e.name} (op ${e.op}, timeoutMs ${e.timeoutMs})`,
        ),
    );
  }
  if (state === 'drained') {
    await s.synchronize({ timeoutMs: 30_000 }).then(
      () => step('stream drained: the delay, then the aborted all-reduce, finished'),
      (e) =>
        step(
          `stream drained with an error (reported, not the point here): ${e.name}: ${e.message}`,
        ),
    );
  }
  step(
    `ending the process: ${end === 'throw' ? 'uncaught exception' : 'process.exit(3)'}, group/stream/memory live`,
  );
  if (end === 'exit') process.exit(3);
  throw new Error(`uncaught on purpose (${scenario}): the process must exit with code 1`);
}

async function checks(rank, size, device, store, mem) {
  const gloo = await initGroup({ backend: 'gloo', rank, worldSize: size, store, jobId: 'gloo' });
  const g = await initGroup({
    backend: 'nccl',
    rank,
    worldSize: size,
    store,
    device,
    jobId: 'nccl',
  });
  const s = Stream.create(device);
  const n = 1001 * 1024 + 7; // odd element count, 4 MB of f32
  const buf = mem.alloc(4 * n * size * 2, { tag: 'activations', owner: 'comm-test' });
  const f32 = (off, len) => buf.tensor('f32', [len], off);
  const put = (off, arr) => buf.write(off, arr);
  const get = async (off, C, len) =>
    new C((await buf.read(off, len * C.BYTES_PER_ELEMENT)).buffer.slice(0));
  const input = (r, len) => Float32Array.from({ length: len }, (_, i) => ((r * 7 + i) % 13) - 6);
  const same = (a, b, what) => {
    assert.equal(a.length, b.length, `${what}: length`);
    for (let i = 0; i < a.length; i++)
      if (a[i] !== b[i]) assert.fail(`${what}: element ${i}: NCCL ${a[i]}, gloo ${b[i]}`);
  };

  for (const op of ['sum', 'max', 'min', 'prod']) {
    await put(0, input(rank, n));
    g.allReduce(f32(0, n), op, s);
    await g.wait();
    same(
      await get(0, Float32Array, n),
      await gloo.allReduce(input(rank, n), op),
      `allReduce ${op}`,
    );
  }
  const bf16 = (x) => new Uint16Array(new Float32Array([x]).buffer)[1];
  await put(
    0,
    Uint16Array.from({ length: 64 }, (_, i) => bf16((i % 5) + rank)),
  );
  g.allReduce(buf.tensor('bf16', [64]), 'sum', s);
  await g.wait();
  same(
    await get(0, Uint16Array, 64),
    await gloo.allReduce(Uint16Array.from({ length: 64 }, (_, i) => bf16((i % 5) + rank))),
    'allReduce bf16',
  );

  await put(0, input(rank, n));
  g.broadcast(f32(0, n), size - 1, s);
  await g.wait();
  same(await get(0, Float32Array, n), await gloo.broadcast(input(rank, n), size - 1), 'broadcast');

  await put(0, input(rank, n));
  g.allGather(f32(0, n), f32(4 * n, n * size), s);
  await g.wait();
  same(await get(4 * n, Float32Array, n * size), await gloo.allGather(input(rank, n)), 'allGather');

  await put(0, input(rank, n * size));
  g.reduceScatter(f32(0, n * size), f32(4 * n * size, n), 'sum', s);
  await g.wait();
  same(
    await get(4 * n * size, Float32Array, n),
    await gloo.reduceScatter(input(rank, n * size), 'sum'),
    'reduceScatter',
  );

  // Stream order: a fill before and a copy after the all-reduce, nothing awaited in between.
  s.fill(buf.ptr, 4 * 1024, 0x40000000, 4); // 2.0f
  g.allReduce(f32(0, 1024), 'sum', s);
  s.copy(buf.ptr + 8192n, buf.ptr, 4 * 1024);
  await s.synchronize();
  same(
    await get(8192, Float32Array, 1024),
    new Float32Array(1024).fill(2 * size),
    'fill -> allReduce -> copy',
  );

  let p2p = 'not run: world size 1 (needs 2 GPUs)';
  if (size >= 2) {
    const right = (rank + 1) % size;
    const left = (rank + size - 1) % size;
    await put(0, input(rank, n));
    g.exchange(
      [
        { op: 'send', data: f32(0, n), peer: right },
        { op: 'recv', data: f32(4 * n, n), peer: left },
      ],
      s,
    );
    await g.wait();
    const glooGot = new Float32Array(n);
    await gloo.exchange([
      { op: 'send', data: input(rank, n), peer: right },
      { op: 'recv', data: glooGot, peer: left },
    ]);
    same(await get(4 * n, Float32Array, n), glooGot, 'ring exchange');
    if (rank === 0) g.send(f32(0, n), 1, s);
    if (rank === 1) g.recv(f32(4 * n, n), 0, s);
    await g.wait();
    if (rank === 1) same(await get(4 * n, Float32Array, n), input(0, n), 'send 0 -> recv 1');
    p2p = 'ok';
  }
  g.barrier(s);
  await g.wait();
  g.dispose();

  // Watchdog: the stream is busy for 5 s, so the all-reduce behind it outlives its 2 s timeout.
  const w = await initGroup({
    backend: 'nccl',
    rank,
    worldSize: size,
    store,
    device,
    jobId: 'watchdog',
    timeoutMs: 2000,
  });
  s.delay(5000);
  const t0 = Date.now();
  w.allReduce(f32(0, 16), 'sum', s);
  let watchdog;
  await w.wait().then(
    () => assert.fail('wait() resolved although the all-reduce outlived its timeout'),
    (e) => {
      assert.ok(e instanceof CommError, `expected CommError, got ${e}`);
      watchdog = errorOf(e, t0);
    },
  );
  assert.equal(w.lastError()?.op, 'allReduce');
  let after;
  try {
    w.allReduce(f32(0, 16), 'sum', s);
  } catch (e) {
    after = errorOf(e, t0);
  }
  await s.synchronize({ timeoutMs: 30000 });
  w.dispose();
  await gloo.barrier(); // nobody still needs rank 0's store server
  gloo.dispose();
  s.dispose();
  return { rank, ok: true, p2p, watchdog, after };
}

async function nojoin(rank, device, store, mem) {
  const g = await initGroup({
    backend: 'nccl',
    rank,
    worldSize: 2,
    store,
    device,
    jobId: 'nojoin',
    timeoutMs: 3000,
  });
  const s = Stream.create(device);
  const buf = mem.alloc(4096, { tag: 'activations', owner: 'nojoin' });
  if (rank === 1) {
    // Never joins the all-reduce; leaves once rank 0 has reported.
    await store.get('nojoin-reported', { timeoutMs: 30000 });
    process.exit(0);
  }
  const t0 = Date.now();
  g.allReduce(buf.tensor('f32', [1024]), 'sum', s);
  try {
    await g.wait();
    assert.fail('wait() resolved although rank 1 never joined');
  } catch (e) {
    assert.ok(e instanceof CommError, `expected CommError, got ${e}`);
    const r = errorOf(e, t0);
    await store.set('nojoin-reported', '1');
    g.dispose();
    return r;
  }
}

// ---------------------------------- dispatch (last: everything above is initialized) ----------------------------------

if (process.env.RANK === undefined) {
  parentMain();
} else {
  await rankMain(process.argv[2]);
}
