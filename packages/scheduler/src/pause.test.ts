import { describe, expect, it } from 'vitest';
import { SchedulerStateError } from './pause-state.js';
import { Scheduler } from './scheduler.js';
import { collect, FakeWorker, prompt, req, runToCompletion } from './test-harness.js';

const OPTS = { numBlocks: 64, blockSize: 4, maxModelLen: 128, maxNumBatchedTokens: 16 };

function setup() {
  return { s: new Scheduler(OPTS), w: new FakeWorker(OPTS.numBlocks, OPTS.blockSize) };
}

/** Steps until the scheduler reports paused (the engine's drain loop). */
function drain(s: Scheduler, w: FakeWorker, tokens = new Map<string, number[]>()) {
  for (let i = 0; !s.isPaused; i++) {
    if (i > 1000) throw new Error('drain did not finish');
    const out = s.schedule();
    if (out.totalNumScheduledTokens > 0) collect(tokens, s.update(w.execute(out)));
  }
  return tokens;
}

describe('pause modes', () => {
  it("'abort' aborts everything; in-flight outputs are ignored; paused once they return", () => {
    const { s, w } = setup();
    s.addRequest(req('a', prompt(1, 10), 20));
    s.addRequest(req('b', prompt(2, 40), 20));
    const inFlight = s.schedule();
    const aborted = s.pause('abort');
    expect(aborted.map((o) => [o.requestId, o.finishReason])).toEqual([
      ['a', 'abort'],
      ['b', 'abort'],
    ]);
    expect(s.state).toBe('pausing'); // a step is still in flight
    expect(s.update(w.execute(inFlight))).toEqual([]);
    expect(s.state).toBe('paused');
    expect(s.pool.numFreeBlocks).toBe(64);
  });

  it("'wait' finishes running requests, admits nobody, keeps waiting ones for resume", () => {
    const { s, w } = setup();
    s.addRequest(req('a', prompt(1, 10), 5));
    const got = new Map<string, number[]>();
    collect(got, s.update(w.execute(s.schedule())));
    s.pause('wait');
    s.addRequest(req('late', prompt(2, 10), 5));
    drain(s, w, got);
    expect(got.get('a')).toHaveLength(5);
    expect(s.getRequest('late')!.status).toBe('waiting');
    s.resume();
    expect(runToCompletion(s, w).get('late')).toHaveLength(5);
  });

  it("'keep' freezes requests with their KV and continues them after resume", () => {
    const ref = setup();
    ref.s.addRequest(req('a', prompt(1, 10), 12));
    const expected = runToCompletion(ref.s, ref.w).get('a');
    const { s, w } = setup();
    s.addRequest(req('a', prompt(1, 10), 12));
    const got = new Map<string, number[]>();
    for (let i = 0; i < 4; i++) collect(got, s.update(w.execute(s.schedule())));
    const pending = s.schedule();
    s.pause('keep');
    expect(s.schedule().totalNumScheduledTokens).toBe(0);
    collect(got, s.update(w.execute(pending)));
    expect(s.state).toBe('paused');
    expect(s.getRequest('a')!.blockIds.length).toBeGreaterThan(0);
    s.resume();
    collect(
      got,
      [...runToCompletion(s, w)].map(
        ([requestId, newTokenIds]) => ({ requestId, newTokenIds }) as never,
      ),
    );
    expect(got.get('a')).toEqual(expected);
  });

  it('a drain timeout escalates wait → abort', () => {
    const { s, w } = setup();
    s.addRequest(req('a', prompt(1, 10), 50));
    s.update(w.execute(s.schedule()));
    s.pause('wait');
    expect(s.pause('wait')).toEqual([]);
    expect(s.state).toBe('pausing');
    expect(s.pause('abort')).toHaveLength(1);
    expect(s.state).toBe('paused');
    s.resume();
    s.addRequest(req('kept', prompt(2, 10), 50));
    s.update(w.execute(s.schedule()));
    s.pause('keep');
    expect(s.state).toBe('paused');
    expect(s.pause('abort').map((o) => o.requestId)).toEqual(['kept']); // drop what 'keep' kept
    expect(s.pool.numFreeBlocks).toBe(64);
  });
});

describe('sleep state machine', () => {
  it('sleep needs paused; wake discarding KV recomputes kept requests to identical outputs', () => {
    const ref = setup();
    ref.s.addRequest(req('a', prompt(1, 30), 20));
    const expected = runToCompletion(ref.s, ref.w).get('a');

    const { s, w } = setup();
    expect(() => s.sleep(1)).toThrow(SchedulerStateError);
    s.addRequest(req('a', prompt(1, 30), 20));
    const got = new Map<string, number[]>();
    for (let i = 0; i < 5; i++) collect(got, s.update(w.execute(s.schedule())));
    s.pause('keep');
    drain(s, w, got);
    expect(s.sleep(1)).toBe(true);
    expect(s.sleep(1)).toBe(false); // double sleep: no-op
    expect(() => s.resume()).toThrow(/wakeUp/);
    w.discardKv(); // the allocator discarded kv_cache: reading it now would fail the fake worker
    expect(s.wakeUp({ kvDiscarded: true })).toBe(true);
    expect(s.wakeUp({ kvDiscarded: true })).toBe(false);
    expect(s.stats().numRunning).toBe(0); // preempted: will recompute
    s.resume();
    for (const [id, t] of runToCompletion(s, w))
      collect(got, [{ requestId: id, newTokenIds: t } as never]);
    expect(got.get('a')).toEqual(expected);
  });

  it('after a KV discard the prefix cache reports no stale hits', () => {
    const { s, w } = setup();
    const p = prompt(5, 20);
    s.addRequest(req('a', p, 2));
    runToCompletion(s, w);
    s.pause('abort');
    s.sleep(1);
    w.discardKv();
    s.wakeUp({ kvDiscarded: true });
    s.resume();
    const hitsBefore = s.stats().prefixCacheHits;
    s.addRequest(req('b', p, 2));
    runToCompletion(s, w); // the fake worker throws on any stale KV read
    expect(s.stats().prefixCacheHits).toBe(hitsBefore);
  });

  it('level 2 invalidates weights until markWeightsLoaded', () => {
    const { s } = setup();
    s.pause('abort');
    s.sleep(2);
    expect(s.weightsValid).toBe(false);
    s.wakeUp({ kvDiscarded: true });
    expect(() => s.resume()).toThrow(/markWeightsLoaded/);
    s.markWeightsLoaded();
    s.resume();
    expect(s.state).toBe('running');
    expect(() => s.pause('stop' as never)).toThrow(/mode/);
  });
});
