import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { type LaunchOptions, type LaunchResult, launch } from './launch.js';

/** The rank fixture the process tests launch (it imports the built dist/). */
export const RANK_SCRIPT = fileURLToPath(new URL('../test/fixtures/rank.mjs', import.meta.url));

/** Collects written text. */
export class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

export interface ScenarioRun extends LaunchResult {
  /** "RESULT" objects by rank. */
  results: Map<number, Record<string, unknown>>;
  output: string;
}

/** Launches `n` ranks of a fixture scenario and parses their RESULT lines. */
export async function runScenario(
  scenario: string,
  n: number,
  extra: Partial<LaunchOptions> = {},
): Promise<ScenarioRun> {
  const out = new Capture();
  const err = new Capture();
  const r = await launch({
    script: RANK_SCRIPT,
    args: [scenario],
    nprocPerNode: n,
    stdout: out,
    stderr: err,
    graceMs: 10_000,
    // A scenario that hangs is torn down (SIGTERM, then SIGKILL) before vitest gives up on it, so
    // no rank process outlives its test.
    signal: AbortSignal.timeout(15_000),
    ...extra,
  });
  return { ...r, ...parse(out.text), output: out.text + err.text };
}

/** Extracts "[rank N] RESULT {...}" lines. */
export function parse(text: string): { results: Map<number, Record<string, unknown>> } {
  const results = new Map<number, Record<string, unknown>>();
  for (const m of text.matchAll(/^\[rank (\d+)\] RESULT (.*)$/gm)) {
    results.set(Number(m[1]), JSON.parse(m[2]!) as Record<string, unknown>);
  }
  return { results };
}
