import { InvalidArgumentError } from '@x/core';
import { describe, expect, it } from 'vitest';
import { Scheduler } from './scheduler.js';
import type { SchedulerOptions } from './scheduler-types.js';
import { collect, FakeWorker, prompt, req, runToCompletion } from './test-harness.js';

function setup(options: Partial<SchedulerOptions> = {}) {
  const o: SchedulerOptions = { numBlocks: 64, blockSize: 4, maxModelLen: 128, ...options };
  const s = new Scheduler(o);
  const w = new FakeWorker(o.numBlocks, o.blockSize ?? 16);
  return { s, w };
}

describe('Scheduler: batching', () => {
  it('chunks a long prompt under the token budget, then decodes', () => {
    const { s, w } = setup({ maxNumBatchedTokens: 32 });
    s.addRequest(req('a', prompt(1, 100), 3));
    const chunks: number[] = [];
    const done = new Map<string, number[]>();
    while (s.hasUnfinishedRequests) {
      const out = s.schedule();
      chunks.push(out.totalNumScheduledTokens);
      collect(done, s.update(w.execute(out)));
    }
    expect(chunks).toEqual([32, 32, 32, 4, 1, 1]);
    expect(done.get('a')).toHaveLength(3);
    expect(s.pool.numFreeBlocks).toBe(64);
  });

  it('schedules running requests before admitting waiting ones, within maxNumSeqs', () => {
    const { s, w } = setup({ maxNumBatchedTokens: 20, maxNumSeqs: 2 });
    s.addRequest(req('a', prompt(1, 10), 5));
    s.addRequest(req('b', prompt(2, 10), 5));
    s.addRequest(req('c', prompt(3, 10), 5));
    const first = s.schedule();
    expect(first.newRequests.map((r) => [r.requestId, r.numScheduledTokens])).toEqual([
      ['a', 10],
      ['b', 10],
    ]);
    s.update(w.execute(first));
    const second = s.schedule();
    expect(second.cachedRequests.map((r) => r.requestId)).toEqual(['a', 'b']);
    expect(second.newRequests).toEqual([]); // maxNumSeqs = 2
    expect(s.stats()).toMatchObject({ numRunning: 2, numWaiting: 1 });
    s.update(w.execute(second));
    runToCompletion(s, w);
    expect(s.pool.numFreeBlocks).toBe(64);
  });

  it('sends each request in full once, then only new tokens and new blocks', () => {
    const { s, w } = setup();
    s.addRequest(req('a', prompt(1, 6), 4));
    const o1 = s.schedule();
    expect(o1.newRequests[0]).toMatchObject({
      requestId: 'a',
      promptTokenIds: prompt(1, 6),
      outputTokenIds: [],
      blockIds: expect.any(Array),
      numComputedTokens: 0,
      numScheduledTokens: 6,
      sample: true,
    });
    expect(o1.newRequests[0]!.blockIds).toHaveLength(2);
    const r1 = s.update(w.execute(o1));
    const t1 = r1[0]!.newTokenIds[0]!;
    const o2 = s.schedule();
    expect(o2.newRequests).toEqual([]);
    expect(o2.cachedRequests).toEqual([
      {
        requestId: 'a',
        newTokenIds: [t1],
        newBlockIds: [],
        numComputedTokens: 6,
        numScheduledTokens: 1,
        sample: true,
        maskStopTokens: false,
      },
    ]);
    s.update(w.execute(o2));
    const o3 = s.schedule();
    expect(o3.cachedRequests[0]!.newBlockIds).toEqual([]);
    s.update(w.execute(o3));
    const o4 = s.schedule(); // position 8 needs a third block
    expect(o4.cachedRequests[0]!.newBlockIds).toHaveLength(1);
    const last = s.update(w.execute(o4));
    expect(last[0]).toMatchObject({ finishReason: 'length', numOutputTokens: 4 });
    expect(s.schedule().finishedRequestIds).toEqual(['a']);
  });

  it('schedules the next prefill chunk while the previous step is in flight (overlap)', () => {
    const { s, w } = setup({ maxNumBatchedTokens: 8 });
    s.addRequest(req('a', prompt(1, 20), 2));
    const o1 = s.schedule();
    const o2 = s.schedule(); // step 1 not updated yet
    const o3 = s.schedule();
    expect([o1, o2, o3].map((o) => o.totalNumScheduledTokens)).toEqual([8, 8, 4]);
    expect(s.schedule().totalNumScheduledTokens).toBe(0); // waits for its sampled token
    expect(s.numStepsInFlight).toBe(3);
    for (const o of [o1, o2, o3]) s.update(w.execute(o));
    expect(s.getRequest('a')!.numOutputTokens).toBe(1);
    runToCompletion(s, w);
  });

  it('async scheduling runs a decode one step ahead on the token still being sampled', () => {
    const run = (asyncScheduling: boolean) => {
      const { s, w } = setup({ asyncScheduling });
      s.addRequest(req('a', prompt(3, 10), 6));
      s.addRequest(req('b', prompt(4, 7), 3));
      const tokens = new Map<string, number[]>();
      const ahead: number[] = [];
      // Always one step in flight: schedule N+1, then update N (the engine's pipeline).
      let prev = s.schedule();
      let prevOut = w.execute(prev);
      while (s.hasUnfinishedRequests) {
        const next = s.schedule();
        const nextOut = next.totalNumScheduledTokens > 0 ? w.execute(next) : null;
        ahead.push(next.totalNumScheduledTokens);
        collect(tokens, s.update(prevOut));
        if (nextOut === null) {
          prev = s.schedule();
          if (prev.totalNumScheduledTokens === 0) break;
          prevOut = w.execute(prev);
        } else {
          prev = next;
          prevOut = nextOut;
        }
      }
      return { tokens, ahead, s };
    };
    const sync = run(false);
    const async_ = run(true);
    // Same tokens either way; with async scheduling the step after N is never empty.
    expect(async_.tokens).toEqual(sync.tokens);
    expect(sync.ahead.filter((n) => n === 0).length).toBeGreaterThan(0);
    expect(async_.ahead.slice(0, -2).every((n) => n > 0)).toBe(true);
    expect(async_.tokens.get('a')).toHaveLength(6);
    expect(async_.tokens.get('b')).toHaveLength(3);
    expect(async_.s.pool.numFreeBlocks).toBe(async_.s.pool.numBlocks);
  });

  it('async scheduling does not run past max_tokens; a stop token wastes at most one step', () => {
    const { s, w } = setup({ asyncScheduling: true, eosTokenIds: [0] });
    s.addRequest(req('a', prompt(5, 4), 2));
    const o1 = s.schedule(); // prefill, samples token 1
    const o2 = s.schedule(); // runs ahead: samples token 2 (the last by max_tokens)
    expect(o2.cachedRequests[0]).toMatchObject({
      numScheduledTokens: 1,
      sample: true,
      newTokenIds: [],
    });
    expect(s.schedule().totalNumScheduledTokens).toBe(0); // token 3 would pass max_tokens
    s.update(w.execute(o1));
    const outs = s.update(w.execute(o2));
    expect(outs[0]).toMatchObject({ finishReason: 'length', numOutputTokens: 2 });
    // A request stopped by eos while a step ran ahead: that step's token is dropped.
    s.addRequest(req('b', prompt(6, 4), 10));
    const p1 = s.schedule();
    const p2 = s.schedule();
    const eos = () => 0;
    s.update(w.execute(p1, eos));
    expect(s.getRequest('b')).toBeUndefined(); // finished by eos
    expect(s.update(w.execute(p2))).toEqual([]); // the step ahead is ignored
    expect(s.schedule().finishedRequestIds).toContain('b');
    expect(s.pool.numFreeBlocks).toBe(s.pool.numBlocks);
  });
});

describe('Scheduler: prefix cache', () => {
  it('reuses full prompt blocks of an earlier request and verifies the KV', () => {
    const { s, w } = setup();
    const p = prompt(7, 18);
    s.addRequest(req('a', p, 2));
    runToCompletion(s, w);
    s.addRequest(req('b', [...p, 1, 2], 2));
    const out = s.schedule();
    expect(out.newRequests[0]).toMatchObject({ numComputedTokens: 16, numScheduledTokens: 4 });
    s.update(w.execute(out)); // the fake worker checks every cached position holds b's KV
    runToCompletion(s, w);
    expect(s.stats()).toMatchObject({ prefixCacheQueries: 18 + 20, prefixCacheHits: 16 });
  });

  it('never shares blocks between different cache salts, and not after resetPrefixCache', () => {
    const { s, w } = setup();
    const p = prompt(7, 18);
    s.addRequest({ ...req('a', p, 1), cacheSalt: 'tenant-1' });
    runToCompletion(s, w);
    s.addRequest({ ...req('b', p, 1), cacheSalt: 'tenant-2' });
    const out = s.schedule();
    expect(out.newRequests[0]!.numComputedTokens).toBe(0);
    s.update(w.execute(out));
    expect(s.resetPrefixCache()).toBeGreaterThan(0);
    s.addRequest({ ...req('c', p, 1), cacheSalt: 'tenant-2' });
    expect(s.schedule().newRequests[0]!.numComputedTokens).toBe(0);
  });

  it('skipPrefixCache computes every prompt token (and still offers its blocks to others)', () => {
    const { s, w } = setup();
    const p = prompt(9, 18);
    s.addRequest(req('a', p, 2));
    runToCompletion(s, w);
    s.addRequest({ ...req('b', p, 2), skipPrefixCache: true });
    const step = s.schedule();
    expect(step.newRequests[0]).toMatchObject({ numComputedTokens: 0, numScheduledTokens: 18 });
    s.update(w.execute(step));
    runToCompletion(s, w);
    s.addRequest(req('c', p, 2));
    expect(s.schedule().newRequests[0]!.numComputedTokens).toBe(16);
    expect(() =>
      s.addRequest({ ...req('d', p), skipPrefixCache: 1 as unknown as boolean }),
    ).toThrow(/skipPrefixCache/);
  });

  it('keeps at least one token to compute when the whole prompt is cached', () => {
    const { s, w } = setup();
    const p = prompt(3, 16);
    s.addRequest(req('a', p, 1));
    runToCompletion(s, w);
    s.addRequest(req('b', p, 1));
    const out = s.schedule();
    expect(out.newRequests[0]).toMatchObject({ numComputedTokens: 12, numScheduledTokens: 4 });
    s.update(w.execute(out));
  });
});

describe('Scheduler: preemption and policies', () => {
  it('preempts by recompute when blocks run out; outputs equal an unconstrained run', () => {
    const inputs = Array.from({ length: 6 }, (_, i) => req(`r${i}`, prompt(i, 10 + i), 20));
    const big = setup({ numBlocks: 200 });
    for (const r of inputs) big.s.addRequest(r);
    const expected = runToCompletion(big.s, big.w);
    const small = setup({ numBlocks: 16, maxModelLen: 64 });
    for (const r of inputs) small.s.addRequest(r);
    const got = runToCompletion(small.s, small.w);
    expect(small.s.stats().numPreemptions).toBeGreaterThan(0);
    expect(got).toEqual(expected);
    expect(small.s.pool.numFreeBlocks).toBe(16);
    small.s.pool.checkInvariants();
  });

  it('runs lower priority values first and preempts the least important', () => {
    const { s, w } = setup({ policy: 'priority', numBlocks: 10, maxModelLen: 40, maxNumSeqs: 2 });
    s.addRequest({ ...req('low', prompt(1, 12), 30), priority: 5 });
    s.addRequest({ ...req('high', prompt(2, 12), 30), priority: -1 });
    s.addRequest({ ...req('mid', prompt(3, 12), 30), priority: 1 });
    const first = s.schedule();
    expect(first.newRequests.map((r) => r.requestId)).toEqual(['high', 'mid']);
    s.update(w.execute(first));
    let preemptedHigh = false;
    const finished: string[] = [];
    while (s.hasUnfinishedRequests) {
      const outs = s.update(w.execute(s.schedule()));
      finished.push(...outs.filter((o) => o.finishReason).map((o) => o.requestId));
      if (s.getRequest('high')?.numPreemptions) preemptedHigh = true;
    }
    expect(preemptedHigh).toBe(false);
    expect(finished).toEqual(['high', 'mid', 'low']);
    expect(s.stats().numPreemptions).toBeGreaterThan(0);
    expect(s.pool.numFreeBlocks).toBe(10);
  });
});

describe('Scheduler: abort', () => {
  it('aborts waiting, mid-prefill, in-flight and preempted requests and frees every block', () => {
    const { s, w } = setup({ maxNumBatchedTokens: 8, numBlocks: 12, maxModelLen: 40 });
    s.addRequest(req('waiting', prompt(1, 5), 5));
    expect(s.abort('waiting')).toMatchObject([{ requestId: 'waiting', finishReason: 'abort' }]);
    s.addRequest(req('prefill', prompt(2, 30), 5));
    const o1 = s.schedule(); // first chunk of 8
    s.update(w.execute(o1));
    expect(s.abort('prefill')[0]!.finishReason).toBe('abort');
    expect(s.schedule().finishedRequestIds).toEqual(['prefill']);
    s.addRequest(req('flight', prompt(3, 4), 5));
    const o2 = s.schedule();
    s.abort('flight');
    expect(s.update(w.execute(o2))).toEqual([]); // the late token is ignored
    expect(s.abort('flight')).toEqual([]);
    expect(s.abort('never-existed')).toEqual([]);
    expect(s.pool.numFreeBlocks).toBe(12);
    s.pool.checkInvariants();
  });
});

describe('Scheduler: stop conditions', () => {
  const eos = 0;
  const forced = (tokens: number[]) => {
    let i = 0;
    return () => tokens[i++ % tokens.length]!;
  };
  function run(
    input: Parameters<Scheduler['addRequest']>[0],
    tokens: number[],
    opts: Partial<SchedulerOptions> = {},
  ) {
    const { s, w } = setup({ eosTokenIds: [eos], ...opts });
    s.addRequest(input);
    const sample = forced(tokens);
    const outs = [];
    while (s.hasUnfinishedRequests) {
      const out = s.schedule();
      outs.push(...s.update(w.execute(out, sample)));
    }
    return { outs, last: outs[outs.length - 1]!, out: outs.flatMap((o) => o.newTokenIds), s };
  }

  it('stops at eos (token kept) unless ignore_eos', () => {
    const a = run(req('a', [5, 6], 10), [7, 0, 8]);
    expect(a.out).toEqual([7, 0]);
    expect(a.last).toMatchObject({ finishReason: 'stop', stopReason: null });
    const b = run(
      { requestId: 'b', promptTokenIds: [5], sampling: { maxTokens: 4, ignoreEos: true } },
      [0],
    );
    expect(b.out).toEqual([0, 0, 0, 0]);
    expect(b.last.finishReason).toBe('length');
  });

  it('stops at stop_token_ids with the token as stop reason', () => {
    const r = run(
      { requestId: 'a', promptTokenIds: [1], sampling: { stopTokenIds: [9] } },
      [3, 9, 4],
    );
    expect(r.out).toEqual([3, 9]);
    expect(r.last).toMatchObject({ finishReason: 'stop', stopReason: 9 });
  });

  it('min_tokens suppresses eos and stop tokens and sends the sampler a mask hint', () => {
    const { s, w } = setup({ eosTokenIds: [eos] });
    s.addRequest({
      requestId: 'a',
      promptTokenIds: [1],
      sampling: { minTokens: 2, stopTokenIds: [9] },
    });
    const o1 = s.schedule();
    expect(o1.newRequests[0]).toMatchObject({
      maskStopTokens: true,
      eosTokenIds: [0],
      stopTokenIds: [9],
    });
    s.update(w.execute(o1, () => 0)); // a sampler that ignored the hint: eos does not stop yet
    const o2 = s.schedule();
    expect(o2.cachedRequests[0]!.maskStopTokens).toBe(true);
    // vLLM's rule: the check runs after appending, so the min_tokens-th token may stop.
    expect(s.update(w.execute(o2, () => 9))[0]).toMatchObject({
      finishReason: 'stop',
      stopReason: 9,
    });
  });

  it('caps at max_tokens and at maxModelLen', () => {
    expect(run(req('a', [1, 2], 3), [4]).out).toEqual([4, 4, 4]);
    const r = run({ requestId: 'b', promptTokenIds: [1, 2, 3, 4, 5] }, [4], {
      maxModelLen: 8,
      numBlocks: 2,
    });
    expect(r.out).toHaveLength(3);
    expect(r.last.finishReason).toBe('length');
  });

  it('stops at a stop string found by detokenizing, reporting how much text to cut', () => {
    const vocab: Record<number, string> = {
      1: 'Hello',
      2: ' wor',
      3: 'ld',
      4: '!',
      5: ' END',
      6: 'ING',
    };
    const detokenize = (ids: readonly number[]) => ids.map((t) => vocab[t] ?? '?').join('');
    const r = run(
      { requestId: 'a', promptTokenIds: [1, 5], sampling: { stop: ['world', 'END'] } },
      [2, 3, 4, 5, 6],
      { detokenize },
    );
    // ' END' in the prompt is never matched; 'world' spans two tokens and is cut with what follows.
    expect(r.out).toEqual([2, 3]);
    expect(r.last).toMatchObject({ finishReason: 'stop', stopReason: 'world', stopTrimChars: 5 });
    const text = detokenize(r.out);
    expect(text.slice(0, text.length - r.last.stopTrimChars)).toBe(' ');
  });

  it('refuses stop strings without a detokenize callback', () => {
    const { s } = setup();
    expect(() =>
      s.addRequest({ requestId: 'a', promptTokenIds: [1], sampling: { stop: ['x'] } }),
    ).toThrow(/sampling\.stop/);
  });

  it('passes log-probabilities through', () => {
    const r = run(
      { requestId: 'a', promptTokenIds: [1], sampling: { maxTokens: 1, logprobs: 1 } },
      [7],
    );
    expect(r.last.newLogprobs).toEqual([
      { logprob: -0.07, rank: 1, topTokenIds: [7], topLogprobs: [-0.07] },
    ]);
  });
});

describe('Scheduler: n > 1', () => {
  it('forks the prompt blocks to siblings after the first computed the prompt', () => {
    const { s, w } = setup({ enablePrefixCaching: false });
    const kids = s.addRequest({
      requestId: 'p',
      promptTokenIds: prompt(4, 10),
      sampling: { n: 3, maxTokens: 4 },
    });
    expect(kids.map((k) => k.requestId)).toEqual(['0_p', '1_p', '2_p']);
    const o1 = s.schedule();
    expect(o1.newRequests.map((r) => r.requestId)).toEqual(['0_p']);
    s.update(w.execute(o1));
    const o2 = s.schedule();
    const forks = o2.newRequests;
    expect(forks.map((r) => [r.requestId, r.numComputedTokens, r.numScheduledTokens])).toEqual([
      ['1_p', 8, 2],
      ['2_p', 8, 2],
    ]);
    const leaderBlocks = s.getRequest('0_p')!.blockIds.slice(0, 2);
    for (const f of forks) expect(f.blockIds.slice(0, 2)).toEqual(leaderBlocks);
    s.update(w.execute(o2));
    const outs = runToCompletion(s, w);
    expect(new Set([...outs.values()].map((t) => t.join())).size).toBeGreaterThan(1);
    expect(s.pool.numFreeBlocks).toBe(64);
  });

  it('aborts every completion by the parent id, including held ones', () => {
    const { s } = setup();
    s.addRequest({ requestId: 'p', promptTokenIds: prompt(4, 10), sampling: { n: 2 } });
    s.schedule();
    expect(s.abort('p').map((o) => o.requestId)).toEqual(['0_p', '1_p']);
    expect(s.hasUnfinishedRequests).toBe(false);
    expect(s.stats().numWaiting).toBe(0);
  });
});

describe('Scheduler: validation', () => {
  it('names the bad field, the expectation and what it got', () => {
    const { s } = setup();
    const bad: Array<[unknown, RegExp]> = [
      [{ requestId: '', promptTokenIds: [1] }, /requestId/],
      [{ requestId: 'a', promptTokenIds: [] }, /promptTokenIds/],
      [{ requestId: 'a', promptTokenIds: [1, -2] }, /promptTokenIds\[1\]/],
      [{ requestId: 'a', promptTokenIds: new Array(128).fill(1) }, /at most 127 tokens/],
      [{ requestId: 'a', promptTokenIds: [1], sampling: { maxTokens: 0 } }, /sampling\.maxTokens/],
      [{ requestId: 'a', promptTokenIds: [1], sampling: { n: 1.5 } }, /sampling\.n/],
      [
        { requestId: 'a', promptTokenIds: [1], sampling: { minTokens: 5, maxTokens: 2 } },
        /minTokens/,
      ],
      [
        { requestId: 'a', promptTokenIds: [1], sampling: { stopTokenIds: ['x'] } },
        /stopTokenIds\[0\]/,
      ],
      [{ requestId: 'a', promptTokenIds: [1], priority: 0.5 }, /priority/],
    ];
    for (const [input, re] of bad) {
      expect(() => s.addRequest(input as never)).toThrow(InvalidArgumentError);
      expect(() => s.addRequest(input as never)).toThrow(re);
    }
    s.addRequest(req('dup', [1]));
    expect(() => s.addRequest(req('dup', [1]))).toThrow(/not used by an unfinished request/);
    expect(() => new Scheduler({ numBlocks: 1, blockSize: 4, maxModelLen: 16 })).toThrow(
      /numBlocks/,
    );
    expect(() => s.update({ stepId: 99, sampled: [] })).toThrow(/output\.stepId/);
    const out = s.schedule();
    expect(() => s.update({ stepId: out.stepId, sampled: [] })).toThrow(
      /a token for every request/,
    );
    expect(() =>
      s.update({ stepId: out.stepId, sampled: [{ requestId: 'dup', tokenIds: [1, 2] }] }),
    ).toThrow(/tokenIds/);
    expect(
      s.update({ stepId: out.stepId, sampled: [{ requestId: 'dup', tokenIds: [3] }] }),
    ).toHaveLength(1);
  });
});
