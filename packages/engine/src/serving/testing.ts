// Test helpers for the serving tests: a real engine (fixture model, CPU) driven in-process, with
// each request's outputs collected. Not exported from the package.
import { join } from 'node:path';
import { Stream } from '@x/core';
import { Allocator } from '@x/cumem';
import type { ModelConfig } from '../config.js';
import { loadModel } from '../load-model.js';
import { ModelRunner } from '../model-runner.js';
import { FIXTURES } from '../test-util.js';
import { createEngine, type Engine, type EngineConfig } from './engine-setup.js';
import type { CompletionOutput, EngineRequest } from './types.js';

export const LLAMA = join(FIXTURES, 'llama-v4');

/** Everything one request produced, per completion index. */
export interface Finished {
  tokens: number[][];
  text: string[];
  outputs: CompletionOutput[];
  finishReasons: Array<string | null>;
}

export interface TestEngine extends Engine {
  /** Submits and resolves when every completion finished. */
  run(request: EngineRequest): Promise<Finished>;
  /** Submits; the promise of its end, without awaiting it. */
  submit(request: EngineRequest): Promise<Finished>;
  /** Every output batch seen, in order. */
  batches: CompletionOutput[][];
  /**
   * Resolves once `requestId` has streamed a token (it is decoding), so a test can end it
   * mid-flight without guessing how fast the machine is; rejects after `timeoutMs`.
   */
  untilDecoding(requestId: string, timeoutMs?: number): Promise<void>;
}

/** A started engine on a fixture model (prefix caching on, small KV pool by default). */
export async function startTestEngine(config: EngineConfig = {}): Promise<TestEngine> {
  const waiters = new Map<
    string,
    { n: number; done: number; f: Finished; resolve: (f: Finished) => void }
  >();
  const batches: CompletionOutput[][] = [];
  const streamed = new Set<string>(); // requests that produced a token
  const decodingWaiters = new Map<string, Array<() => void>>();
  const engine = await createEngine(
    { model: LLAMA, maxModelLen: 256, numGpuBlocksOverride: 128, ...config },
    {
      onOutputs: (outs) => {
        batches.push(outs);
        for (const o of outs) {
          if (o.tokenIds.length > 0 && !streamed.has(o.requestId)) {
            streamed.add(o.requestId);
            for (const wake of decodingWaiters.get(o.requestId) ?? []) wake();
            decodingWaiters.delete(o.requestId);
          }
          const w = waiters.get(o.requestId);
          if (!w) continue;
          w.f.outputs.push(o);
          w.f.tokens[o.index]!.push(...o.tokenIds);
          w.f.text[o.index] += o.text;
          if (o.finishReason !== null) {
            w.f.finishReasons[o.index] = o.finishReason;
            if (++w.done === w.n) {
              waiters.delete(o.requestId);
              w.resolve(w.f);
            }
          }
        }
      },
    },
  );
  engine.core.start();
  const submit = (r: EngineRequest) => {
    const n = r.sampling.n ?? 1;
    const f: Finished = {
      tokens: Array.from({ length: n }, () => []),
      text: Array.from({ length: n }, () => ''),
      outputs: [],
      finishReasons: Array.from({ length: n }, () => null),
    };
    const p = new Promise<Finished>((resolve) =>
      waiters.set(r.requestId, { n, done: 0, f, resolve }),
    );
    try {
      engine.core.add(r);
    } catch (err) {
      waiters.delete(r.requestId);
      return Promise.reject(err);
    }
    return p;
  };
  const untilDecoding = (requestId: string, timeoutMs = 10_000) =>
    new Promise<void>((resolve, reject) => {
      if (streamed.has(requestId)) return resolve();
      const timer = setTimeout(
        () => reject(new Error(`request '${requestId}' streamed no token within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const wake = () => {
        clearTimeout(timer);
        resolve();
      };
      decodingWaiters.set(requestId, [...(decodingWaiters.get(requestId) ?? []), wake]);
    });
  return { ...engine, batches, submit, run: submit, untilDecoding };
}

/** A CPU ModelRunner over the checkpoint in `dir` (64 KV blocks, 512 tokens) for `fn`, then torn down. */
async function withReferenceRunner<R>(
  dir: string,
  fn: (runner: ModelRunner, config: ModelConfig, blocks: number[]) => Promise<R>,
): Promise<R> {
  const allocator = await Allocator.create({ device: 'cpu' });
  const model = await loadModel(dir, { allocator, onProgress: () => undefined });
  const stream = Stream.create('cpu');
  const runner = await ModelRunner.create({
    config: model.config,
    weights: model.weights,
    allocator,
    stream,
    numKvBlocks: 64,
    maxModelLen: 512,
  });
  try {
    return await fn(
      runner,
      model.config,
      Array.from({ length: 32 }, (_, i) => i),
    );
  } finally {
    await runner.dispose();
    stream.dispose();
    model.dispose();
    await allocator.dispose();
  }
}

/** Greedy tokens straight from a ModelRunner (no scheduler, no sampler): the reference. */
export function referenceGreedy(
  dir: string,
  prompt: readonly number[],
  maxTokens: number,
): Promise<number[]> {
  return withReferenceRunner(dir, async (runner, config, blocks) => {
    const out: number[] = [];
    const v = config.vocabSize;
    let { logits } = await runner.execute([
      { tokens: prompt, blockTable: blocks, contextLength: prompt.length },
    ]);
    while (out.length < maxTokens) {
      let best = 0;
      for (let i = 1; i < v; i++) if (logits[i]! > logits[best]!) best = i;
      out.push(best);
      if (config.eosTokenIds.includes(best) || out.length === maxTokens) break;
      ({ logits } = await runner.execute([
        { tokens: [best], blockTable: blocks, contextLength: prompt.length + out.length },
      ]));
    }
    return out;
  });
}

/** Logits after every prompt token, from one full pass of a ModelRunner ([T, V]). */
export function referenceLogits(dir: string, prompt: readonly number[]): Promise<Float32Array> {
  return withReferenceRunner(dir, async (runner, _config, blocks) => {
    const { allLogits } = await runner.execute(
      [{ tokens: prompt, blockTable: blocks, contextLength: prompt.length }],
      { allLogits: true },
    );
    return allLogits!;
  });
}

/** Prompt token ids 3.. spread over the vocabulary (no bos/eos), distinct per `seed`. */
export function promptIds(length: number, seed: number, vocab = 32000): number[] {
  return Array.from({ length }, (_, i) => 3 + ((seed * 7919 + i * 104729) % (vocab - 3)));
}
