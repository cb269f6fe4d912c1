import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Request } from './request.js';
import { Scheduler } from './scheduler.js';
import type { ModelOutput } from './scheduler-types.js';
import { FakeWorker, prompt, runToCompletion } from './test-harness.js';

type Cmd =
  | {
      kind: 'add';
      prefix: number;
      len: number;
      maxTokens: number;
      n: number;
      priority: number;
      salt: boolean;
    }
  | { kind: 'step'; lag: boolean }
  | { kind: 'abort'; pick: number }
  | { kind: 'reset' };

const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({
    kind: fc.constant('add' as const),
    prefix: fc.integer({ min: 0, max: 2 }),
    len: fc.integer({ min: 1, max: 40 }),
    maxTokens: fc.integer({ min: 1, max: 24 }),
    n: fc.integer({ min: 1, max: 3 }),
    priority: fc.integer({ min: -2, max: 2 }),
    salt: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('step' as const), lag: fc.boolean() }),
  fc.record({ kind: fc.constant('step' as const), lag: fc.boolean() }),
  fc.record({ kind: fc.constant('abort' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('reset' as const) }),
);

const config = fc.record({
  policy: fc.constantFrom('fcfs' as const, 'priority' as const),
  enablePrefixCaching: fc.boolean(),
  blockSize: fc.constantFrom(2, 4),
  numBlocks: fc.integer({ min: 12, max: 40 }),
  maxNumBatchedTokens: fc.integer({ min: 4, max: 64 }),
  maxNumSeqs: fc.integer({ min: 1, max: 8 }),
  asyncScheduling: fc.boolean(),
});

/** Ref counts must equal how many live requests hold each block. */
function checkRefCounts(s: Scheduler, live: Request[]): void {
  const held = new Array<number>(s.pool.numBlocks).fill(0);
  for (const r of live) if (!r.isFinished) for (const b of r.blockIds) held[b]!++;
  for (let b = 0; b < s.pool.numBlocks; b++) {
    if (s.pool.refCount(b) !== held[b]) {
      throw new Error(`block ${b}: ref count ${s.pool.refCount(b)}, held by ${held[b]} requests`);
    }
  }
}

describe('Scheduler properties (fast-check)', () => {
  it('never leaks or double-owns a block, and every prefix hit reads the right KV', () => {
    fc.assert(
      fc.property(config, fc.array(cmd, { maxLength: 80 }), (cfg, cmds) => {
        const maxModelLen = Math.min(64, cfg.numBlocks * cfg.blockSize);
        const s = new Scheduler({ ...cfg, maxModelLen, eosTokenIds: [0] });
        const w = new FakeWorker(cfg.numBlocks, cfg.blockSize);
        const live: Request[] = [];
        const lagged: ModelOutput[] = [];
        let id = 0;
        for (const c of cmds) {
          if (c.kind === 'add') {
            const len = Math.min(c.len, maxModelLen - 1);
            const shared = prompt(100 + c.prefix, Math.min(len, 12));
            const tokens = [...shared, ...prompt(id, len - shared.length)];
            live.push(
              ...s.addRequest({
                requestId: `r${id++}`,
                promptTokenIds: tokens,
                sampling: { maxTokens: c.maxTokens, n: c.n },
                priority: c.priority,
                cacheSalt: c.salt ? 'salt' : undefined,
              }),
            );
          } else if (c.kind === 'step') {
            // The worker runs steps in order; update() of a lagged step comes one step later.
            const out = s.schedule();
            const result = w.execute(out);
            const older = lagged.shift();
            if (older) s.update(older);
            if (out.totalNumScheduledTokens > 0) {
              if (c.lag) lagged.push(result);
              else s.update(result);
            }
          } else if (c.kind === 'abort') {
            const open = live.filter((r) => !r.isFinished);
            const victim = open[c.pick % Math.max(1, open.length)];
            if (victim) s.abort(c.pick % 2 ? victim.requestId : victim.parentRequestId);
          } else {
            s.resetPrefixCache();
          }
          s.pool.checkInvariants();
          checkRefCounts(s, live);
        }
        for (const o of lagged.splice(0)) s.update(o);
        runToCompletion(s, w, { maxSteps: 20_000 });
        s.pool.checkInvariants();
        expect(s.pool.numFreeBlocks).toBe(cfg.numBlocks);
        expect(live.every((r) => r.isFinished && r.blockIds.length === 0)).toBe(true);
        expect(s.stats()).toMatchObject({ numRunning: 0, numWaiting: 0 });
        expect(s.pool.stats().prefixCacheRejectedHits).toBe(0);
      }),
      { numRuns: Number(process.env.X_FC_RUNS ?? 300) },
    );
  });
});
