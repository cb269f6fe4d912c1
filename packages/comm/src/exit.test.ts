import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

// A process that ends abruptly while @x/comm has work in flight (gloo collectives moving data and
// waiting for a peer on CPU streams, host forms pending, store clients parked on the TCP server;
// test/fixtures/exit.mjs) must end the way it was asked to: its exit code, or the signal it got,
// never SIGSEGV / SIGABRT. A worker thread torn down that way must not take the process with it,
// nor hold its termination for an operation's timeout.
const FIXTURE = fileURLToPath(new URL('../test/fixtures/exit.mjs', import.meta.url));
const REPEATS = 4;
const CHILD_LIMIT_MS = 20_000;

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

const children = new Set<ChildProcess>();
afterEach(() => {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
});

/** Runs the fixture in `mode`; `onReady` runs once it printed READY. SIGKILL after the limit. */
function run(mode: string, delayMs: number, onReady?: (c: ChildProcess) => void): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FIXTURE, mode, String(delayMs)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: fileURLToPath(new URL('..', import.meta.url)),
    });
    children.add(child);
    let output = '';
    let ready = false;
    const onData = (d: Buffer) => {
      output += d.toString();
      if (!ready && /^READY$/m.test(output)) {
        ready = true;
        onReady?.(child);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${mode}: the child did not exit within ${CHILD_LIMIT_MS} ms:\n${output}`));
    }, CHILD_LIMIT_MS);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, output });
    });
  });
}

/** Delays of the abrupt end after READY, so that it lands at different points of the traffic. */
const delays = Array.from({ length: REPEATS }, (_, i) => (i * 37) % 120);

describe('process end with gloo work in flight', () => {
  it.each([
    ['throw', 1],
    ['exit', 3],
  ])(
    '%s on the main thread: exit code %i, no signal',
    async (mode, want) => {
      for (const d of delays) {
        const r = await run(mode, d);
        expect({ code: r.code, signal: r.signal }, r.output).toEqual({ code: want, signal: null });
        expect(r.output).toMatch(/^READY$/m);
      }
    },
    120_000,
  );

  it('SIGTERM (default action): killed by SIGTERM, nothing else', async () => {
    for (let i = 0; i < REPEATS; i++) {
      const r = await run('sigterm', 0, (c) => setTimeout(() => c.kill('SIGTERM'), delays[i]));
      expect({ code: r.code, signal: r.signal }, r.output).toEqual({
        code: null,
        signal: 'SIGTERM',
      });
    }
  }, 120_000);

  it('SIGTERM with a handler calling process.exit(143): exit code 143', async () => {
    for (let i = 0; i < REPEATS; i++) {
      const r = await run('sigterm-exit', 0, (c) => setTimeout(() => c.kill('SIGTERM'), delays[i]));
      expect({ code: r.code, signal: r.signal }, r.output).toEqual({ code: 143, signal: null });
    }
  }, 120_000);

  it.each([
    ['worker', 1],
    ['worker-exit', 3],
  ])(
    'a %s thread torn down mid-traffic: the worker ends (code %i) within 5 s and the process exits 0',
    async (mode, workerCode) => {
      for (const d of delays) {
        const r = await run(mode, d);
        expect({ code: r.code, signal: r.signal }, r.output).toEqual({ code: 0, signal: null });
        const gone = /WORKER GONE code=(\d+) after (\d+) ms/.exec(r.output);
        expect(gone, r.output).not.toBeNull();
        expect(Number(gone![1])).toBe(workerCode);
        // Before: the teardown waited for the stuck all-reduce's 30 s timeout.
        expect(Number(gone![2]), r.output).toBeLessThan(5000);
        expect(r.output).toMatch(/^DONE$/m);
      }
    },
    120_000,
  );
});
