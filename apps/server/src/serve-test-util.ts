// Test helpers: a real `x serve` process (the built CLI) on a free port, killed in every path.
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const CLI = resolve(here, '../dist/cli.js');
export const LLAMA = resolve(here, '../../../packages/engine/fixtures/llama-v4');
export const CHAT_TEMPLATE = resolve(here, 'fixtures/chat-template.jinja');

const live = new Set<ChildProcess>();
// A test runner that dies still takes its servers with it.
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export interface Served {
  url: string;
  proc: ChildProcess;
  /** Everything the server wrote to stderr so far. */
  log(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Starts `x serve <args>` (with the fixture model, a 512-token context and its chat template
 * unless `builtIn`); resolves once it listens.
 */
export async function startServe(
  args: string[] = [],
  env: Record<string, string> = {},
  builtIn = false,
): Promise<Served> {
  const fixture = builtIn
    ? []
    : ['--model', LLAMA, '--max-model-len', '512', '--num-gpu-blocks-override', '512'];
  const named = builtIn ? [] : ['--served-model-name', 'tiny', '--chat-template', CHAT_TEMPLATE];
  const proc = spawn(
    process.execPath,
    [CLI, 'serve', ...fixture, '--port', '0', ...named, ...args],
    {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  live.add(proc);
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => {
    log += d.toString();
  });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    live.delete(proc);
    return proc.exitCode;
  };
  try {
    const url = await new Promise<string>((resolveUrl, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`x serve did not start in 60 s:\n${log}`)),
        60_000,
      );
      const onData = () => {
        const m = log.match(/listening on (http:\/\/\S+)/);
        if (m) {
          clearTimeout(timer);
          proc.stderr!.off('data', onData);
          resolveUrl(m[1]!);
        }
      };
      proc.stderr!.on('data', onData);
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`x serve exited (${code}) before listening:\n${log}`));
      });
    });
    return { url, proc, log: () => log, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** A metric's value from /metrics text (the first series matching the name and label filter). */
export function metric(text: string, name: string, labels = ''): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (!(rest.startsWith(' ') || rest.startsWith('{'))) continue;
    if (labels && !rest.includes(labels)) continue;
    return Number(line.split(' ').at(-1));
  }
  return Number.NaN;
}

export async function metrics(url: string): Promise<string> {
  return (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
}

/** Polls `fn` until it returns true or `timeoutMs` passes (then throws with `what`). */
export async function until(
  what: string,
  fn: () => Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
