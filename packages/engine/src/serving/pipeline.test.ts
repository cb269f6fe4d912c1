// The pipelined worker (the default: each step handed to the runner as soon as the previous one is
// enqueued, sampled ids fed back on the device) against the synchronous one (each step built once
// the previous one's ids are on the host, sampled by the Sampler on its own stream), on the CPU
// device, whose stream mirrors CUDA's ordering. One workload exercises what can happen between two
// steps: preemption (a small KV pool), an abort mid-generation, eos, stop tokens and stop strings,
// min_tokens masking, n = 2, seeded sampling, penalties (whose steps wait for the ids on the host),
// log-probabilities, prompt log-probabilities (steps that read every logit back), and chunked
// prefills beside decodes. Both must give exactly the same outputs.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ModelRunner } from '../model-runner.js';
import type { SequenceStep } from '../models/step-inputs.js';
import { createEngine, type Engine, type EngineConfig } from './engine-setup.js';
import { LLAMA, promptIds } from './testing.js';
import type { CompletionOutput, EngineRequest } from './types.js';

afterEach(() => {
  vi.restoreAllMocks();
});

interface Run {
  outputs: Map<string, CompletionOutput[]>;
  preemptions: number;
  /** Rows the runner got with a fed-back token / all rows, over the run. */
  fedBack: number;
  rows: number;
}

/** Starts an engine, runs `requests` to completion, aborting `abortAfter` ids at N tokens. */
async function runAll(
  config: EngineConfig,
  requests: EngineRequest[],
  abortAfter: Record<string, number> = {},
): Promise<Run> {
  const outputs = new Map<string, CompletionOutput[]>();
  const counts = new Map<string, number>();
  let open = requests.reduce((a, r) => a + (r.sampling.n ?? 1), 0);
  let resolve!: () => void;
  let fail!: (e: Error) => void;
  const finished = new Promise<void>((res, rej) => {
    resolve = res;
    fail = rej;
  });
  let engine: Engine | undefined;
  const seen = { fedBack: 0, rows: 0 };
  const execute = ModelRunner.prototype.execute;
  vi.spyOn(ModelRunner.prototype, 'execute').mockImplementation(function (
    this: ModelRunner,
    batch: readonly SequenceStep[],
    options,
  ) {
    seen.rows += batch.length;
    seen.fedBack += batch.filter((s) => s.feedback !== undefined).length;
    return execute.call(this, batch, options);
  });
  engine = await createEngine(
    { model: LLAMA, maxModelLen: 256, ...config },
    {
      onFatal: (e) => fail(e),
      onOutputs: (outs) => {
        for (const o of outs) {
          const key = `${o.requestId}/${o.index}`;
          outputs.set(key, [...(outputs.get(key) ?? []), o]);
          const n = (counts.get(key) ?? 0) + o.tokenIds.length;
          counts.set(key, n);
          const limit = abortAfter[o.requestId];
          if (limit !== undefined && n >= limit && o.finishReason === null) {
            engine!.core.abort(o.requestId);
          }
          if (o.finishReason !== null && --open === 0) resolve();
        }
      },
    },
  );
  try {
    engine.core.start();
    for (const r of requests) engine.core.add(r);
    await finished;
    return { outputs, preemptions: engine.core.stats().numPreemptions, ...seen };
  } finally {
    await engine.dispose();
    vi.restoreAllMocks();
  }
}

/** What a completion produced, without timing fields. */
function summary(outs: CompletionOutput[]) {
  return {
    tokens: outs.flatMap((o) => o.tokenIds),
    text: outs.map((o) => o.text).join(''),
    logprobs: outs.flatMap((o) => o.logprobs ?? []),
    promptLogprobs: outs.find((o) => o.promptLogprobs)?.promptLogprobs ?? null,
    finishReason: outs.at(-1)!.finishReason,
    abortReason: outs.at(-1)!.abortReason,
    stopReason: outs.at(-1)!.stopReason,
    numCachedTokens: outs.at(-1)!.numCachedTokens,
  };
}

const greedy = (maxTokens: number) => ({ temperature: 0, maxTokens });

describe('pipelined worker', () => {
  it('gives exactly the outputs of the synchronous worker through preemption, abort, stops, n = 2, penalties and prompt logprobs', async () => {
    // Stop tokens taken from a free-running greedy continuation.
    const probe = promptIds(30, 41);
    const free = await runAll({ pipeline: false }, [
      { requestId: 'free', promptTokenIds: probe, sampling: greedy(20) },
    ]);
    const freeTokens = summary(free.outputs.get('free/0')!).tokens;
    const stopId = freeTokens[6]!;
    const text = summary(free.outputs.get('free/0')!).text;
    const requests: EngineRequest[] = [
      ...[20, 37, 52, 61].map((len, i) => ({
        requestId: `g${i}`,
        promptTokenIds: promptIds(len, 10 + i),
        sampling: greedy(24 + i),
      })),
      {
        requestId: 'seeded',
        promptTokenIds: promptIds(33, 20),
        sampling: { temperature: 0.9, topP: 0.9, maxTokens: 20, seed: 11, n: 2 },
      },
      {
        requestId: 'topk',
        promptTokenIds: promptIds(25, 21),
        sampling: { temperature: 1.2, topK: 30, minP: 0.01, maxTokens: 18, seed: 12 },
      },
      {
        requestId: 'stop',
        promptTokenIds: probe,
        sampling: { ...greedy(20), stopTokenIds: [stopId] },
      },
      {
        requestId: 'stopstr',
        promptTokenIds: probe,
        sampling: { ...greedy(20), stop: [text.slice(12, 15)] },
      },
      {
        requestId: 'min',
        promptTokenIds: probe,
        sampling: { ...greedy(16), stopTokenIds: [freeTokens[0]!], minTokens: 6 },
      },
      {
        requestId: 'penalties',
        promptTokenIds: promptIds(28, 22),
        sampling: {
          temperature: 0.7,
          seed: 3,
          maxTokens: 16,
          repetitionPenalty: 1.3,
          frequencyPenalty: 0.5,
          presencePenalty: 0.2,
        },
      },
      {
        requestId: 'logprobs',
        promptTokenIds: promptIds(19, 23),
        sampling: { ...greedy(12), logprobs: 3 },
      },
      {
        requestId: 'echo',
        promptTokenIds: promptIds(40, 24),
        sampling: { ...greedy(6), promptLogprobs: 2 },
      },
      { requestId: 'abort', promptTokenIds: promptIds(45, 25), sampling: greedy(60) },
    ];
    const config = { numGpuBlocksOverride: 24, maxNumBatchedTokens: 48, seed: 5 };
    const abort = { abort: 7 };
    const sync = await runAll({ ...config, pipeline: false }, requests, abort);
    const piped = await runAll({ ...config, pipeline: true }, requests, abort);
    expect([...piped.outputs.keys()].sort()).toEqual([...sync.outputs.keys()].sort());
    for (const [key, outs] of sync.outputs) {
      expect(summary(piped.outputs.get(key)!), key).toEqual(summary(outs));
    }
    // The workload did what it says.
    const end = (k: string) => summary(sync.outputs.get(k)!);
    expect(sync.preemptions).toBeGreaterThan(0);
    expect(piped.preemptions).toBe(sync.preemptions);
    expect(end('abort/0').finishReason).toBe('abort');
    expect(end('abort/0').tokens.length).toBeGreaterThanOrEqual(7);
    expect(end('stop/0').stopReason).toBe(stopId);
    expect(end('stopstr/0').finishReason).toBe('stop');
    expect(end('min/0').tokens.length).toBeGreaterThanOrEqual(6);
    expect(end('seeded/1').tokens).not.toEqual(end('seeded/0').tokens);
    expect(end('echo/0').promptLogprobs).toHaveLength(40);
    expect(end('logprobs/0').logprobs).toHaveLength(12);
    // Pipelined steps really took tokens from the device; the synchronous worker never does.
    expect(sync.fedBack).toBe(0);
    expect(piped.fedBack).toBeGreaterThan(piped.rows / 4);
  });

  it('without async scheduling too (nothing runs ahead: no token to feed back)', async () => {
    const requests = [0, 1, 2].map((i) => ({
      requestId: `r${i}`,
      promptTokenIds: promptIds(30 + 11 * i, 60 + i),
      sampling: { temperature: 0.8, seed: 9, maxTokens: 10 },
    }));
    const config = { asyncScheduling: false, maxNumBatchedTokens: 32 };
    const sync = await runAll({ ...config, pipeline: false }, requests);
    const piped = await runAll({ ...config, pipeline: true }, requests);
    for (const [key, outs] of sync.outputs) {
      expect(summary(piped.outputs.get(key)!), key).toEqual(summary(outs));
    }
    expect(piped.fedBack).toBe(0);
  });
});
