import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '@x/core';
import { describe, expect, it } from 'vitest';
import { freePort, launch } from './launch.js';
import { Capture, parse, RANK_SCRIPT } from './test-util.js';

function script(body: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'x-comm-launch-'));
  const path = join(dir, 'rank.mjs');
  writeFileSync(path, body);
  return path;
}

describe('launch', () => {
  it('sets the rank environment and prefixes output with the rank', async () => {
    const out = new Capture();
    const r = await launch({
      script: script(
        'const e = process.env; console.log([e.RANK, e.WORLD_SIZE, e.LOCAL_RANK, e.LOCAL_WORLD_SIZE, e.MASTER_ADDR, e.NCCL_NVLS_ENABLE, e.MASTER_PORT > 0].join(","));',
      ),
      nprocPerNode: 3,
      stdout: out,
    });
    expect(r).toEqual({ exitCode: 0, failures: [] });
    const lines = out.text.trim().split('\n').sort();
    expect(lines).toEqual([
      '[rank 0] 0,3,0,3,127.0.0.1,0,true',
      '[rank 1] 1,3,1,3,127.0.0.1,0,true',
      '[rank 2] 2,3,2,3,127.0.0.1,0,true',
    ]);
  });

  it('tears every rank down when one fails and returns its exit code', async () => {
    const err = new Capture();
    const t0 = Date.now();
    const r = await launch({
      script: script(
        'if (process.env.RANK === "1") { setTimeout(() => process.exit(7), 100); } else { setTimeout(() => {}, 60000); }',
      ),
      nprocPerNode: 3,
      stderr: err,
      stdout: new Capture(),
    });
    expect(r.exitCode).toBe(7);
    expect(r.failures).toEqual([{ rank: 1, exitCode: 7, signal: null }]);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(err.text).toMatch(/rank 1 exited with code 7; stopping the other ranks/);
  });

  it('kills ranks that ignore SIGTERM after the grace period', async () => {
    const r = await launch({
      script: script(
        'process.on("SIGTERM", () => {}); if (process.env.RANK === "0") setTimeout(() => process.exit(3), 100); else setInterval(() => {}, 1000);',
      ),
      nprocPerNode: 2,
      graceMs: 300,
      stdout: new Capture(),
      stderr: new Capture(),
    });
    expect(r.exitCode).toBe(3);
  });

  it('forms one world from two "nodes" on one host (--nnodes 2, loopback)', async () => {
    const port = await freePort();
    const outs = [new Capture(), new Capture()];
    const runs = [0, 1].map((node) =>
      launch({
        script: RANK_SCRIPT,
        args: ['world'],
        nprocPerNode: 2,
        nnodes: 2,
        nodeRank: node,
        masterAddr: '127.0.0.1',
        masterPort: port,
        stdout: outs[node],
        stderr: outs[node],
      }),
    );
    const results = await Promise.all(runs);
    expect(
      results.map((r) => r.exitCode),
      outs[0]!.text + outs[1]!.text,
    ).toEqual([0, 0]);
    const all = new Map([...parse(outs[0]!.text).results, ...parse(outs[1]!.text).results]);
    expect([...all.keys()].sort()).toEqual([0, 1, 2, 3]);
    for (const [rank, res] of all) {
      expect(res).toEqual({ rank, size: 4, sum: 6, local: rank % 2, node: rank >> 1 });
    }
  });

  it('rejects bad options with InvalidArgumentError', async () => {
    await expect(launch({ script: 'x.mjs', nprocPerNode: 0 })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    await expect(
      launch({ script: 'x.mjs', nprocPerNode: 1, nnodes: 2, nodeRank: 2 }),
    ).rejects.toThrow(/options.nodeRank/);
  });
});
