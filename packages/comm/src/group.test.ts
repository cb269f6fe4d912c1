import { HostBuffer, InvalidArgumentError, Stream, Tensor } from '@x/core';
import { describe, expect, it } from 'vitest';
import { initGroup } from './init-group.js';
import { freePort } from './launch.js';
import { runScenario } from './test-util.js';

// Real processes over loopback: each scenario is test/fixtures/rank.mjs run by launch().
describe('ProcessGroup (gloo, real processes)', () => {
  it.each([2, 4])('runs every collective in every dtype and reduction with %i ranks', async (n) => {
    const r = await runScenario('ops', n);
    expect(r.exitCode, r.output).toBe(0);
    expect(r.results.size).toBe(n);
  });

  it.each([2, 4])(
    'passes values along send/recv chains and ring exchanges with %i ranks',
    async (n) => {
      const r = await runScenario('p2p', n);
      expect(r.exitCode, r.output).toBe(0);
      // 100 + 0 + 1 + ... + (n-1) arrives at the last rank.
      expect(r.results.get(n - 1)?.chain).toBe(100 + (n * (n - 1)) / 2);
    },
  );

  it('forms TP and PP subgroups with newGroup and split', async () => {
    const r = await runScenario('subgroups', 4);
    expect(r.exitCode, r.output).toBe(0);
    const by = (k: number) => r.results.get(k)!;
    expect([0, 1, 2, 3].map((k) => by(k).tpSum)).toEqual([1, 1, 5, 5]);
    expect([0, 1, 2, 3].map((k) => by(k).tpRank)).toEqual([0, 1, 0, 1]);
    // split(parity, key = -rank): higher ranks first.
    expect([0, 1, 2, 3].map((k) => by(k).ppRank)).toEqual([1, 1, 0, 0]);
    expect(by(0).ppWorld).toEqual([2, 0]);
    expect([0, 1, 2, 3].map((k) => by(k).ppMax)).toEqual([2, 3, 2, 3]);
    expect(by(0).rest).toBeNull();
    expect(by(3).rest).toEqual([1, 2, 3]);
  });

  it('keeps collectives exact and on their own stream while another thread works on its stream', async () => {
    const r = await runScenario('seed', 2);
    expect(r.exitCode, r.output).toBe(0);
    for (const k of [0, 1]) {
      const res = r.results.get(k)!;
      expect(res.mainOps).toEqual(['comm.allReduce']);
      expect(res.mainCount).toBe(40);
      const w = res.worker as {
        n: number;
        ops: number;
        labels: string[];
        comm: number;
        last: boolean;
      };
      expect(w.n).toBeGreaterThan(0);
      // The worker's stream saw its own fills and copies (the op log keeps the last 4096), and no
      // collective of the main thread.
      expect(w.ops).toBe(Math.min(2 * w.n, 4096));
      expect(w.labels.sort()).toEqual(['copy', 'fill']);
      expect(w.comm).toBe(0);
      expect(w.last).toBe(true);
    }
  });
});

describe('ProcessGroup failures', () => {
  it('fails every rank with CommError within the timeout when a rank never joins', async () => {
    const r = await runScenario('missing', 2, { env: { COMM_TIMEOUT_MS: '1500' } });
    expect(r.exitCode, r.output).toBe(0);
    for (const k of [0, 1]) {
      const e = r.results.get(k)!;
      expect(e.name).toBe('CommError');
      expect(e.op).toBe('init');
      expect(e.rank).toBe(k);
      expect(e.peer).toBe(2);
      expect(e.timeoutMs).toBe(1500);
      expect(e.message).toMatch(/rank\(s\) 2 did not join/);
      expect(e.ms as number).toBeLessThan(1500 + 2000);
    }
  });

  it('fails the surviving ranks when a rank is killed mid-collective', async () => {
    const r = await runScenario('killed', 3, { env: { COMM_TIMEOUT_MS: '2000' } });
    expect(r.failures[0]).toMatchObject({ rank: 2, signal: 'SIGKILL' });
    expect(r.exitCode).toBe(137);
    for (const k of [0, 1]) {
      const e = r.results.get(k);
      expect(e, r.output).toBeDefined();
      expect(e!.name).toBe('CommError');
      expect(e!.op).toBe('allReduce');
      expect(e!.rank).toBe(k);
      expect(e!.ms as number).toBeLessThan(2000 + 2000);
    }
  });

  it('reports mismatched sizes on both ranks, naming both sizes, and stays usable', async () => {
    const r = await runScenario('mismatch', 2);
    expect(r.exitCode, r.output).toBe(0);
    const r0 = r.results.get(0)!;
    const r1 = r.results.get(1)!;
    const c0 = r0.collective as Record<string, unknown>;
    expect(c0.name).toBe('CommError');
    expect(c0.peer).toBe(1);
    expect(c0.message).toMatch(
      /allReduce of 4 f32 elements.*rank 1 called allReduce of 5 f32 elements/,
    );
    expect((r1.collective as Record<string, unknown>).peer).toBe(0);
    for (const res of [r0, r1]) {
      const p = res.p2p as Record<string, unknown>;
      expect(p.name).toBe('CommError');
      expect(p.message).toMatch(
        /sends 3 i32 elements, the receiver \(rank 1\) expects 5 i32 elements/,
      );
      expect(res.after).toBe(2);
    }
  });
});

describe('ProcessGroup tensor forms and memory', () => {
  it('refuses memory x does not manage, at enqueue and again when the op runs', async () => {
    const port = await freePort();
    const g = await initGroup({
      backend: 'gloo',
      rank: 0,
      worldSize: 1,
      initMethod: `tcp://127.0.0.1:${port}`,
    });
    const s = Stream.create('cpu', { recordOps: true });
    const bogus = new Tensor({ ptr: 0x1000n, dtype: 'f32', shape: [4], device: 'cpu' });
    expect(() => g.allReduce(bogus, 'sum', s)).toThrow(InvalidArgumentError);
    const hb = HostBuffer.alloc(64);
    const t = new Tensor({ ptr: hb.ptr, dtype: 'f32', shape: [4], device: 'cpu' });
    const past = new Tensor({ ptr: hb.ptr + 32n, dtype: 'f32', shape: [16], device: 'cpu' });
    expect(() => g.broadcast(past, 0, s)).toThrow(/runs past the end/);
    // Enqueued while valid, freed before it runs: the stream cancels the op (it would touch
    // unmapped memory) and fails with the reason instead of the process.
    s.delay(200);
    g.allGather(t, new Tensor({ ptr: hb.ptr + 16n, dtype: 'f32', shape: [4], device: 'cpu' }), s);
    hb.dispose();
    expect(() => g.allReduce(t, 'sum', s)).toThrow(InvalidArgumentError);
    await expect(s.synchronize()).rejects.toMatchObject({
      code: 'X_INVALID_ARGUMENT',
      message: expect.stringMatching(/comm\.allGather not run: input .* is not memory x manages/),
    });
    expect(g.lastError()?.message).toMatch(/allGather not run: its input is no longer usable/);
    expect(g.lastError()?.op).toBe('allGather');
    g.dispose();
  });
});
