import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

// `x launch` end to end: the built CLI starts real rank processes. The rank fixture is @x/comm's
// (it forms a gloo world and all-reduces the ranks).
const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const rankScript = fileURLToPath(
  new URL('../../../packages/comm/test/fixtures/rank.mjs', import.meta.url),
);

const started: ChildProcess[] = [];
const rankPids: number[] = [];

afterEach(async () => {
  // Whatever happened, nothing this file started outlives it: SIGTERM lets `x launch` tear its
  // ranks down; SIGKILL follows for anything still alive.
  const live = started.splice(0).filter((c) => c.exitCode === null && c.signalCode === null);
  for (const c of live) c.kill('SIGTERM');
  await Promise.all(
    live.map(
      (c) =>
        new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            c.kill('SIGKILL');
            resolve();
          }, 3000);
          c.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
        }),
    ),
  );
  for (const pid of rankPids.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

interface Run {
  child: ChildProcess;
  /** Output so far (stdout and stderr). */
  out(): string;
  done: Promise<{ code: number | null; out: string }>;
}

function x(args: string[]): Run {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  const done = new Promise<{ code: number | null; out: string }>((resolve) =>
    child.once('close', (code) => resolve({ code, out })),
  );
  return { child, out: () => out, done };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('x launch', () => {
  it('forms one world from two "nodes" on one host (--nnodes 2 over loopback)', async () => {
    const port = String(await freePort());
    const nodes = [0, 1].map((node) =>
      x([
        'launch',
        '--nproc-per-node',
        '2',
        '--nnodes',
        '2',
        '--node-rank',
        String(node),
        '--master-addr',
        '127.0.0.1',
        '--master-port',
        port,
        rankScript,
        'world',
      ]),
    );
    const [a, b] = await Promise.all(nodes.map((n) => n.done));
    expect([a!.code, b!.code], a!.out + b!.out).toEqual([0, 0]);
    const results = new Map<number, unknown>();
    for (const m of (a!.out + b!.out).matchAll(/^\[rank (\d+)\] RESULT (.*)$/gm)) {
      results.set(Number(m[1]), JSON.parse(m[2]!));
    }
    expect([...results.keys()].sort()).toEqual([0, 1, 2, 3]);
    for (const [rank, res] of results) {
      expect(res).toEqual({ rank, size: 4, sum: 6, local: rank % 2, node: rank >> 1 });
    }
  });

  it('tears every rank down on SIGTERM and exits with 130', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'x-launch-cli-'));
    const script = join(dir, 'sleeper.mjs');
    writeFileSync(script, 'console.log("PID " + process.pid); setInterval(() => {}, 1000);');
    const run = x(['launch', '--nproc-per-node', '2', '--grace-ms', '500', script]);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('ranks did not start within 15 s')), 15_000);
      const poll = setInterval(() => {
        rankPids.splice(0, rankPids.length);
        for (const m of run.out().matchAll(/^\[rank \d+\] PID (\d+)$/gm))
          rankPids.push(Number(m[1]));
        if (rankPids.length === 2) {
          clearInterval(poll);
          clearTimeout(timer);
          resolve();
        }
      }, 20);
    });
    run.child.kill('SIGTERM');
    const { code } = await run.done;
    expect(code).toBe(130);
    for (const pid of rankPids) expect(alive(pid), `rank pid ${pid}`).toBe(false);
  });
});
