import { afterEach, describe, expect, it } from 'vitest';
import { EngineUnavailableError } from './errors.js';
import { promptIds, startTestEngine, type TestEngine } from './testing.js';

let engine: TestEngine | undefined;
afterEach(async () => {
  await engine?.dispose();
  engine = undefined;
});

const greedy = (maxTokens: number) => ({ temperature: 0, maxTokens, ignoreEos: true });
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('EngineCore sleep and wake (poisoned memory: stale reads turn into NaN)', () => {
  it('level 1 and level 2 + reload give the outputs of a fresh engine, with no stale prefix hits', async () => {
    engine = await startTestEngine({ poison: true });
    const fresh = await startTestEngine({ poison: true });
    try {
      const shared = promptIds(48, 50); // three full blocks shared by every prompt below
      for (let cycle = 0; cycle < 4; cycle++) {
        const level = cycle % 2 === 0 ? 1 : 2;
        const prompt = [...shared, ...promptIds(10, 60 + cycle)];
        // Fill the prefix cache, then sleep: the KV behind it is discarded.
        await engine.run({
          requestId: `warm${cycle}`,
          promptTokenIds: prompt,
          sampling: greedy(8),
        });
        await engine.core.sleep({ level });
        expect(engine.core.status()).toMatchObject({ state: 'sleeping', sleepLevel: level });
        expect(() =>
          engine!.core.add({ requestId: 'z', promptTokenIds: prompt, sampling: {} }),
        ).toThrow(EngineUnavailableError);
        await engine.core.wake();
        if (level === 2) {
          expect(engine.core.status()).toMatchObject({ state: 'paused', weightsValid: false });
          expect(() =>
            engine!.core.add({ requestId: 'z', promptTokenIds: prompt, sampling: {} }),
          ).toThrow(/reload_weights/);
          await engine.core.reloadWeights();
        }
        expect(engine.core.status()).toMatchObject({
          state: 'running',
          asleepTags: [],
          weightsValid: true,
        });
        const hitsBefore = engine.core.stats().prefixCacheHits;
        const after = await engine.run({
          requestId: `after${cycle}`,
          promptTokenIds: prompt,
          sampling: greedy(12),
        });
        expect(engine.core.stats().prefixCacheHits, 'no hit may survive a KV discard').toBe(
          hitsBefore,
        );
        fresh.core.resetPrefixCache();
        const want = await fresh.run({
          requestId: `ref${cycle}`,
          promptTokenIds: prompt,
          sampling: greedy(12),
        });
        expect(after.tokens[0]).toEqual(want.tokens[0]);
        // And the cache works again after the wake: the same prompt now hits.
        await engine.run({
          requestId: `again${cycle}`,
          promptTokenIds: prompt,
          sampling: greedy(2),
        });
        expect(engine.core.stats().prefixCacheHits).toBeGreaterThan(hitsBefore);
      }
    } finally {
      await fresh.dispose();
    }
  });

  it("ends requests in flight per mode: 'abort' aborts, 'wait' drains, 'keep' resumes after wake", async () => {
    engine = await startTestEngine({ poison: true });
    const p = promptIds(30, 7);
    const ref = await engine.run({ requestId: 'ref', promptTokenIds: p, sampling: greedy(60) });

    const aborted = engine.submit({ requestId: 'a', promptTokenIds: p, sampling: greedy(200) });
    await engine.untilDecoding('a'); // mid-flight whatever the machine's speed
    await engine.core.sleep({ level: 1, mode: 'abort' });
    const a = await aborted;
    expect(a.finishReasons).toEqual(['abort']);
    expect(a.outputs.at(-1)!.abortReason).toBe('sleep');
    await engine.core.wake();

    const drained = engine.submit({ requestId: 'w', promptTokenIds: p, sampling: greedy(60) });
    await tick(10);
    await engine.core.sleep({ level: 1, mode: 'wait' });
    const w = await drained;
    expect(w.finishReasons).toEqual(['length']);
    expect(w.tokens[0]).toEqual(ref.tokens[0]);
    await engine.core.wake();

    const kept = engine.submit({ requestId: 'k', promptTokenIds: p, sampling: greedy(60) });
    await tick(10);
    await engine.core.sleep({ level: 1, mode: 'keep' });
    await engine.core.wake(); // KV was discarded: the kept request is recomputed
    const k = await kept;
    expect(k.finishReasons).toEqual(['length']);
    expect(k.tokens[0]).toEqual(ref.tokens[0]);
  });

  it("a drain timeout escalates 'wait' to 'abort'", async () => {
    engine = await startTestEngine();
    const long = engine.submit({
      requestId: 'l',
      promptTokenIds: promptIds(20, 8),
      sampling: greedy(230),
    });
    // Mid-flight, with far more tokens left (229, ≥ 40 ms on a fast machine) than the drain allows.
    await engine.untilDecoding('l');
    await engine.core.sleep({ level: 1, mode: 'wait', drainTimeoutMs: 5 });
    expect((await long).finishReasons).toEqual(['abort']);
    expect(engine.core.status().state).toBe('sleeping');
    await engine.core.wake();
    expect(engine.core.status().state).toBe('running');
  });

  it('pause keeps requests until resume, stays paused across a wake, and rejects new ones', async () => {
    engine = await startTestEngine();
    const p = promptIds(30, 9);
    const ref = await engine.run({ requestId: 'ref', promptTokenIds: p, sampling: greedy(40) });
    const kept = engine.submit({ requestId: 'k', promptTokenIds: p, sampling: greedy(40) });
    await tick(5);
    await engine.core.pause('keep');
    expect(engine.core.status()).toMatchObject({ state: 'paused', pausedByUser: 'keep' });
    expect(() => engine!.core.add({ requestId: 'n', promptTokenIds: p, sampling: {} })).toThrow(
      /paused/,
    );
    await engine.core.sleep({ level: 1, mode: 'keep' });
    await engine.core.wake();
    expect(engine.core.status().state).toBe('paused'); // the user's pause outlives the sleep
    await engine.core.resume();
    expect((await kept).tokens[0]).toEqual(ref.tokens[0]);
  });

  it('sleeping only the KV cache keeps the weights mapped; double sleep and wake are no-ops', async () => {
    engine = await startTestEngine({ poison: true });
    const p = promptIds(30, 10);
    const ref = await engine.run({ requestId: 'ref', promptTokenIds: p, sampling: greedy(10) });
    await engine.core.sleep({ tags: ['kv_cache'] });
    await engine.core.sleep({ tags: ['kv_cache'] });
    expect(engine.core.status().asleepTags).toEqual(['kv_cache']);
    expect(engine.allocator.stats().weights!.mapped).toBeGreaterThan(0);
    expect(engine.allocator.stats().kv_cache!.mapped).toBe(0);
    await engine.core.wake();
    await engine.core.wake();
    const again = await engine.run({ requestId: 'again', promptTokenIds: p, sampling: greedy(10) });
    expect(again.tokens[0]).toEqual(ref.tokens[0]);
    // A partial wake (weights first, as RL weight updates do) keeps serving off until all is awake.
    await engine.core.sleep({ level: 2 });
    await engine.core.wake(['weights']);
    expect(engine.core.status()).toMatchObject({
      state: 'sleeping',
      asleepTags: ['activations', 'kv_cache'].sort(),
    });
    await engine.core.reloadWeights();
    await engine.core.wake();
    expect(engine.core.status()).toMatchObject({ state: 'running', weightsValid: true });
    const last = await engine.run({ requestId: 'last', promptTokenIds: p, sampling: greedy(10) });
    expect(last.tokens[0]).toEqual(ref.tokens[0]);
  });
});
