import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import type { Writable } from 'node:stream';
import { InvalidArgumentError } from '@x/core';

/** Options of launch(): one process per local rank, torchrun-style environment. */
export interface LaunchOptions {
  /** The program: .js/.mjs/.cjs run with this Node, .py with python3, anything else is executed. */
  script: string;
  args?: readonly string[];
  nprocPerNode: number;
  nnodes?: number;
  nodeRank?: number;
  /** Rendezvous host (default 127.0.0.1). */
  masterAddr?: string;
  /** Rendezvous port (default: a free port when nnodes is 1, else 29500). */
  masterPort?: number;
  /** Extra environment for every rank. */
  env?: Record<string, string>;
  /** Milliseconds between SIGTERM and SIGKILL when tearing ranks down (default 5000). */
  graceMs?: number;
  /** Where prefixed output goes (default process.stdout / process.stderr). */
  stdout?: Writable;
  stderr?: Writable;
  /** Aborting tears every rank down (exit code 130 unless a rank failed first). */
  signal?: AbortSignal;
}

/** How a launch ended: the first failing rank decides `exitCode` (0 when all succeeded). */
export interface LaunchResult {
  exitCode: number;
  /** Ranks that failed on their own (not the ones torn down after the first failure). */
  failures: Array<{ rank: number; exitCode: number | null; signal: NodeJS.Signals | null }>;
}

const SIGNAL_CODES: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGTERM: 15,
  SIGABRT: 6,
};

function positiveInt(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new InvalidArgumentError(name, `an integer >= ${min}`, v);
  }
  return v;
}

/** A free TCP port on the loopback interface. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function command(script: string, args: readonly string[]): [string, string[]] {
  if (/\.(m|c)?js$/.test(script)) return [process.execPath, [script, ...args]];
  if (script.endsWith('.py')) return ['python3', [script, ...args]];
  return [script, [...args]];
}

/**
 * Starts `nprocPerNode` ranks of this node with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
 * GROUP_RANK, MASTER_ADDR, MASTER_PORT and NCCL_NVLS_ENABLE=0 set; prefixes every output line with
 * "[rank N]"; when a rank fails, terminates the others (SIGTERM, then SIGKILL after graceMs).
 */
export async function launch(options: LaunchOptions): Promise<LaunchResult> {
  if (typeof options?.script !== 'string' || options.script.length === 0) {
    throw new InvalidArgumentError('options.script', 'a script path', options?.script);
  }
  const nproc = positiveInt('options.nprocPerNode', options.nprocPerNode, 1);
  const nnodes = positiveInt('options.nnodes', options.nnodes ?? 1, 1);
  const nodeRank = positiveInt('options.nodeRank', options.nodeRank ?? 0, 0);
  if (nodeRank >= nnodes)
    throw new InvalidArgumentError('options.nodeRank', `an integer in [0, ${nnodes})`, nodeRank);
  const masterAddr = options.masterAddr ?? '127.0.0.1';
  const masterPort = options.masterPort ?? (nnodes === 1 ? await freePort() : 29500);
  positiveInt('options.masterPort', masterPort, 1);
  const graceMs = options.graceMs ?? 5000;
  const out = options.stdout ?? process.stdout;
  const err = options.stderr ?? process.stderr;
  const [cmd, argv] = command(options.script, options.args ?? []);

  const children: ChildProcess[] = [];
  const failures: LaunchResult['failures'] = [];
  let firstCode = 0;
  let tearingDown = false;
  let killTimer: NodeJS.Timeout | undefined;

  const teardown = (): void => {
    if (tearingDown) return;
    tearingDown = true;
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    killTimer = setTimeout(() => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }, graceMs);
  };
  const onAbort = (): void => {
    if (firstCode === 0) firstCode = 130;
    teardown();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });

  const exits: Promise<void>[] = [];
  for (let local = 0; local < nproc; local++) {
    const rank = nodeRank * nproc + local;
    const child = spawn(cmd, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        ...options.env,
        RANK: String(rank),
        WORLD_SIZE: String(nnodes * nproc),
        LOCAL_RANK: String(local),
        LOCAL_WORLD_SIZE: String(nproc),
        GROUP_RANK: String(nodeRank),
        MASTER_ADDR: masterAddr,
        MASTER_PORT: String(masterPort),
        NCCL_NVLS_ENABLE: '0',
      },
    });
    children.push(child);
    const pipe = (src: NodeJS.ReadableStream | null, dst: Writable): Promise<void> => {
      if (!src) return Promise.resolve();
      const rl = createInterface({ input: src, crlfDelay: Number.POSITIVE_INFINITY });
      rl.on('line', (line) => dst.write(`[rank ${rank}] ${line}\n`));
      return new Promise((resolve) => rl.once('close', resolve));
    };
    const streams = Promise.all([pipe(child.stdout, out), pipe(child.stderr, err)]);
    exits.push(
      new Promise<void>((resolve) => {
        child.once('error', (e) => {
          err.write(`[rank ${rank}] could not start ${cmd}: ${e.message}\n`);
          failures.push({ rank, exitCode: 127, signal: null });
          if (firstCode === 0) firstCode = 127;
          teardown();
          resolve();
        });
        child.once('exit', (code, signal) => {
          const failed = code !== 0;
          if (failed && !tearingDown) {
            failures.push({ rank, exitCode: code, signal });
            firstCode = code ?? 128 + (SIGNAL_CODES[signal ?? ''] ?? 1);
            err.write(
              `[launch] rank ${rank} exited with ${signal ?? `code ${code}`}; stopping the other ranks\n`,
            );
            teardown();
          }
          void streams.then(() => resolve());
        });
      }),
    );
  }
  await Promise.all(exits);
  clearTimeout(killTimer);
  options.signal?.removeEventListener('abort', onAbort);
  return { exitCode: firstCode, failures };
}
