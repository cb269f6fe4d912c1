import { InvalidArgumentError } from '@x/core';
import { Allocator } from '@x/cumem';
import type { ModelOutput, SchedulerOutput } from '@x/scheduler';
import { afterEach, describe, expect, it } from 'vitest';
import { loadModel } from '../load-model.js';
import { EngineCore } from './engine-core.js';
import type { Executor } from './executor.js';
import { InProcessExecutor } from './in-process-executor.js';
import {
  LLAMA,
  promptIds,
  referenceGreedy,
  referenceLogits,
  startTestEngine,
  type TestEngine,
} from './testing.js';
import { TextDecoder } from './text-decoder.js';

let engine: TestEngine | undefined;
afterEach(async () => {
  await engine?.dispose();
  engine = undefined;
});

const greedy = (maxTokens: number) => ({ temperature: 0, maxTokens, ignoreEos: true });

describe('EngineCore', () => {
  it('greedy output equals a plain ModelRunner loop, token for token', async () => {
    const prompt = promptIds(40, 1);
    const want = await referenceGreedy(LLAMA, prompt, 24);
    engine = await startTestEngine();
    const got = await engine.run({ requestId: 'a', promptTokenIds: prompt, sampling: greedy(24) });
    expect(got.tokens[0]).toEqual(want);
    expect(got.finishReasons).toEqual(['length']);
    // The text continues the prompt's (the leading space of the first token is kept, as in vLLM).
    const tok = engine.model.tokenizer;
    const whole = await tok.decode([...prompt, ...want]);
    expect(got.text[0]).toBe(whole.slice((await tok.decode(prompt)).length));
  });

  it('batches 12 concurrent requests (prefill chunks beside decodes) to the tokens each gets alone', async () => {
    engine = await startTestEngine({ maxNumBatchedTokens: 48 });
    const prompts = Array.from({ length: 12 }, (_, i) => promptIds(20 + 7 * i, 100 + i));
    const alone: number[][] = [];
    for (const [i, p] of prompts.entries()) {
      alone.push(
        (await engine.run({ requestId: `s${i}`, promptTokenIds: p, sampling: greedy(12) }))
          .tokens[0]!,
      );
    }
    engine.core.resetPrefixCache();
    const together = await Promise.all(
      prompts.map((p, i) =>
        engine!.run({ requestId: `c${i}`, promptTokenIds: p, sampling: greedy(12) }),
      ),
    );
    expect(together.map((f) => f.tokens[0])).toEqual(alone);
    // They really ran together: some step carried several requests.
    expect(Math.max(...engine.batches.map((b) => b.length))).toBeGreaterThan(1);
  });

  it('gives the same tokens with and without running decodes one step ahead', async () => {
    const prompts = Array.from({ length: 6 }, (_, i) => promptIds(10 + 9 * i, 300 + i));
    const sampling = { temperature: 0.8, topP: 0.9, maxTokens: 20, seed: 5, minTokens: 3 };
    const run = async (asyncScheduling: boolean) => {
      const e = await startTestEngine({ asyncScheduling });
      const out = await Promise.all(
        prompts.map((p, i) => e.run({ requestId: `q${i}`, promptTokenIds: p, sampling })),
      );
      await e.dispose();
      return out.map((f) => [f.tokens[0], f.finishReasons[0]]);
    };
    expect(await run(true)).toEqual(await run(false));
  });

  it('reproduces seeded sampling; other seeds and the n siblings draw differently', async () => {
    engine = await startTestEngine();
    const prompt = promptIds(30, 2);
    const sampling = { temperature: 1, maxTokens: 16, ignoreEos: true, seed: 1234 };
    const a = await engine.run({ requestId: 'a', promptTokenIds: prompt, sampling });
    const b = await engine.run({ requestId: 'b', promptTokenIds: prompt, sampling });
    const c = await engine.run({
      requestId: 'c',
      promptTokenIds: prompt,
      sampling: { ...sampling, seed: 99 },
    });
    const n2 = await engine.run({
      requestId: 'd',
      promptTokenIds: prompt,
      sampling: { ...sampling, n: 2 },
    });
    expect(b.tokens[0]).toEqual(a.tokens[0]);
    expect(c.tokens[0]).not.toEqual(a.tokens[0]);
    expect(n2.tokens[0]).toEqual(a.tokens[0]); // index 0 draws with seed + 0
    expect(n2.tokens[1]).not.toEqual(n2.tokens[0]);
    expect(n2.tokens[1]!.length).toBe(16);
  });

  it('--seed makes unseeded requests repeat on a fresh engine', async () => {
    const prompt = promptIds(30, 3);
    const run = async () => {
      const e = await startTestEngine({ seed: 7 });
      const f = await e.run({
        requestId: 'x',
        promptTokenIds: prompt,
        sampling: { maxTokens: 12, ignoreEos: true },
      });
      await e.dispose();
      return f.tokens[0];
    };
    expect(await run()).toEqual(await run());
  });

  it('cuts stop strings, keeps stop tokens, honours min_tokens and returns log-probabilities', async () => {
    engine = await startTestEngine();
    const prompt = promptIds(25, 4);
    const free = await engine.run({ requestId: 'f', promptTokenIds: prompt, sampling: greedy(20) });
    const text = free.text[0]!;
    // A stop string taken from the middle of the free-running text.
    const stop = text.slice(10, 13);
    const s = await engine.run({
      requestId: 's',
      promptTokenIds: prompt,
      sampling: { ...greedy(20), stop: [stop] },
    });
    expect(s.finishReasons).toEqual(['stop']);
    expect(s.outputs.at(-1)!.stopReason).toBe(stop);
    expect(s.text[0]).toBe(text.slice(0, text.indexOf(stop)));
    const kept = await engine.run({
      requestId: 'k',
      promptTokenIds: prompt,
      sampling: { ...greedy(20), stop: [stop], includeStopStrInOutput: true },
    });
    expect(kept.text[0]!.startsWith(text.slice(0, text.indexOf(stop) + stop.length))).toBe(true);
    const stopId = free.tokens[0]![5]!;
    const t = await engine.run({
      requestId: 't',
      promptTokenIds: prompt,
      sampling: { ...greedy(20), stopTokenIds: [stopId] },
    });
    expect(t.tokens[0]).toEqual(free.tokens[0]!.slice(0, free.tokens[0]!.indexOf(stopId) + 1));
    expect(t.outputs.at(-1)!.stopReason).toBe(stopId);
    // min_tokens masks the stop token until 8 tokens exist.
    const m = await engine.run({
      requestId: 'm',
      promptTokenIds: prompt,
      sampling: { ...greedy(20), stopTokenIds: [free.tokens[0]![0]!], minTokens: 8 },
    });
    expect(m.tokens[0]!.length).toBeGreaterThanOrEqual(8);
    expect(m.tokens[0]!.slice(0, 8)).not.toContain(free.tokens[0]![0]);
    const lp = await engine.run({
      requestId: 'l',
      promptTokenIds: prompt,
      sampling: { ...greedy(6), logprobs: 3 },
    });
    const all = lp.outputs.flatMap((o) => o.logprobs ?? []);
    expect(all).toHaveLength(6);
    for (const [i, e] of all.entries()) {
      expect(e.tokenId).toBe(free.tokens[0]![i]);
      expect(e.rank).toBe(1); // greedy picks the most likely token
      expect(e.top).toHaveLength(3);
      expect(e.top[0]!.tokenId).toBe(e.tokenId);
      expect(e.top[0]!.logprob).toBeCloseTo(e.logprob, 5);
      expect(e.top[1]!.logprob).toBeLessThanOrEqual(e.top[0]!.logprob);
      expect(e.logprob).toBeLessThan(0);
    }
  });

  it('frees every block of an aborted request, and a full pool recomputes to the same tokens', async () => {
    engine = await startTestEngine({ numGpuBlocksOverride: 20, maxNumBatchedTokens: 64 });
    const big = await startTestEngine({ numGpuBlocksOverride: 400, maxNumBatchedTokens: 64 });
    try {
      const prompts = Array.from({ length: 6 }, (_, i) => promptIds(50, 200 + i));
      const [small, large] = await Promise.all(
        [engine, big].map((e) =>
          Promise.all(
            prompts.map((p, i) =>
              e.run({ requestId: `r${i}`, promptTokenIds: p, sampling: greedy(30) }),
            ),
          ),
        ),
      );
      expect(small!.map((f) => f.tokens[0])).toEqual(large!.map((f) => f.tokens[0]));
      expect(engine.core.stats().numPreemptions).toBeGreaterThan(0);
      expect(big.core.stats().numPreemptions).toBe(0);
    } finally {
      await big.dispose();
    }
    const pending = engine.submit({
      requestId: 'long',
      promptTokenIds: promptIds(60, 9),
      sampling: greedy(150),
    });
    // Abort once the request is decoding, not after a fixed delay: on a fast machine the test
    // model's 150 tokens took less than 30 ms, and the request finished first.
    await engine.untilDecoding('long');
    engine.core.abort('long');
    const f = await pending;
    expect(f.finishReasons).toEqual(['abort']);
    expect(f.outputs.at(-1)!.abortReason).toBe('client');
    await new Promise((r) => setTimeout(r, 20));
    expect(engine.core.stats().numFreeBlocks).toBe(20);
    expect(engine.core.stats().numRunning).toBe(0);
  });

  it('returns prompt log-probabilities gathered over prefill chunks, equal to one full pass', async () => {
    const prompt = promptIds(40, 77);
    const logits = await referenceLogits(LLAMA, prompt);
    engine = await startTestEngine({ maxNumBatchedTokens: 16 });
    // The prefix is cached first: a request with prompt logprobs must still compute all of it.
    await engine.run({ requestId: 'warm', promptTokenIds: prompt, sampling: greedy(2) });
    const f = await engine.run({
      requestId: 'p',
      promptTokenIds: prompt,
      sampling: { ...greedy(2), promptLogprobs: 3, n: 2 },
    });
    const first = f.outputs.find((o) => o.index === 0)!;
    expect(first.numCachedTokens).toBe(0);
    const pl = first.promptLogprobs!;
    expect(pl).toHaveLength(40);
    expect(pl[0]).toBeNull();
    const v = 32000;
    for (let p = 1; p < 40; p++) {
      const row = logits.subarray((p - 1) * v, p * v);
      let max = Number.NEGATIVE_INFINITY;
      for (const x of row) max = Math.max(max, x);
      let sum = 0;
      for (const x of row) sum += Math.exp(x - max);
      const want = row[prompt[p]!]! - max - Math.log(sum);
      const e = pl[p]!;
      expect(e.tokenId).toBe(prompt[p]);
      expect(e.logprob).toBeCloseTo(want, 4);
      expect(e.top).toHaveLength(3);
      expect(e.top[0]!.logprob).toBeGreaterThanOrEqual(e.logprob);
      expect(e.rank).toBe(1 + Array.from(row).filter((x) => x > row[prompt[p]!]!).length);
    }
    // Only completion 0 reports them.
    expect(f.outputs.filter((o) => o.promptLogprobs !== undefined)).toHaveLength(1);
  });

  it('rejects bad requests with errors that name the field, and queues nothing', async () => {
    engine = await startTestEngine();
    const base = { requestId: 'bad', promptTokenIds: [5, 6, 7], sampling: {} };
    const cases: Array<[object, RegExp]> = [
      [{ promptTokenIds: [5, 32000] }, /promptTokenIds\[1\]/],
      [{ promptTokenIds: [] }, /promptTokenIds/],
      [{ sampling: { temperature: -1 } }, /sampling\.temperature/],
      [{ sampling: { topP: 0 } }, /sampling\.topP/],
      [{ sampling: { stopTokenIds: [1, 40000] } }, /sampling\.stopTokenIds\[1\]/],
      [{ sampling: { logprobs: 21 } }, /sampling\.logprobs/],
      [{ sampling: { logitBias: { 99999: 1 } } }, /sampling\.logitBias/],
      [{ sampling: { maxTokens: 0 } }, /sampling\.maxTokens/],
      [{ promptTokenIds: promptIds(256, 1) }, /promptTokenIds/],
    ];
    for (const [patch, re] of cases) {
      const r = { ...base, ...patch } as typeof base;
      expect(() => engine!.core.add(r), JSON.stringify(patch)).toThrow(InvalidArgumentError);
      expect(() => engine!.core.add(r)).toThrow(re);
    }
    expect(engine.core.stats().numWaiting).toBe(0);
    const ok = await engine.run({ ...base, sampling: greedy(2) });
    expect(ok.tokens[0]).toHaveLength(2);
  });
});

describe('EngineCore overlap', () => {
  it('hands step N+1 to the executor before step N has resolved', async () => {
    const allocator = await Allocator.create({ device: 'cpu' });
    const model = await loadModel(LLAMA, { allocator, onProgress: () => undefined });
    const real = await InProcessExecutor.create({
      config: model.config,
      weights: model.weights,
      allocator,
      numKvBlocks: 128,
      blockSize: 16,
      maxModelLen: 256,
      budgetBytes: 0,
    });
    const events: string[] = [];
    const spy: Executor = {
      numKvBlocks: real.numKvBlocks,
      blockSize: real.blockSize,
      execute(step: SchedulerOutput): Promise<ModelOutput> {
        events.push(`call ${step.stepId}`);
        return real.execute(step).then((o) => {
          events.push(`done ${step.stepId}`);
          return o;
        });
      },
      synchronize: (t) => real.synchronize(t),
      sleep: (r) => real.sleep(r),
      wake: (t) => real.wake(t),
      asleepTags: () => real.asleepTags(),
      reloadWeights: (d) => real.reloadWeights(d),
      memory: () => real.memory(),
      dispose: () => real.dispose(),
    };
    let finished = 0;
    const core = new EngineCore({
      executor: spy,
      decoder: TextDecoder.load(LLAMA, model.tokenizer),
      modelDir: LLAMA,
      maxModelLen: 256,
      vocabSize: model.config.vocabSize,
      eosTokenIds: model.config.eosTokenIds,
      maxNumBatchedTokens: 16,
      onOutputs: (outs) => {
        finished += outs.filter((o) => o.finishReason !== null).length;
      },
    });
    core.start();
    /** Steps handed over while the step before was still running. */
    const overlaps = () =>
      events.filter((e, i) => {
        if (!e.startsWith('call ')) return false;
        const n = Number(e.slice(5));
        const doneBefore = events.indexOf(`done ${n - 1}`);
        return events.includes(`call ${n - 1}`) && (doneBefore === -1 || doneBefore > i);
      }).length;
    // Long prompts in 16-token chunks: chunk k+1 can be scheduled while chunk k runs.
    for (let i = 0; i < 3; i++) {
      core.add({ requestId: `r${i}`, promptTokenIds: promptIds(80, i), sampling: greedy(4) });
    }
    while (finished < 3) await new Promise((r) => setTimeout(r, 5));
    expect(overlaps(), events.join(', ')).toBeGreaterThan(0);
    // Pure decodes overlap too: each runs one step ahead on the token still being sampled.
    events.length = 0;
    core.add({ requestId: 'd', promptTokenIds: promptIds(8, 9), sampling: greedy(20) });
    while (finished < 4) await new Promise((r) => setTimeout(r, 5));
    expect(overlaps(), events.join(', ')).toBeGreaterThanOrEqual(15);
    await core.shutdown();
    model.dispose();
    await allocator.dispose();
  });
});
