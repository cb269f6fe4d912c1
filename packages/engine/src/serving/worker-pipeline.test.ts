// A pipelined Worker driven with hand-written scheduler diffs, handed over back to back (none
// awaited before the next): a decode whose token the previous step is still sampling takes it
// from the device; one whose token comes from an older step, or that uses penalties, waits for it
// on the host; a confirmation of a token not sampled yet is an InternalError. Same tokens as a
// synchronous Worker given the same diffs (tokens are never confirmed here: the worker keeps
// what it sampled).
import { Allocator } from '@x/cumem';
import type { SchedulerOutput } from '@x/scheduler';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadModel, type Model } from '../load-model.js';
import { type ExecuteResult, ModelRunner } from '../model-runner.js';
import type { SequenceStep } from '../models/step-inputs.js';
import { PENDING_TOKEN, RequestStates } from './request-states.js';
import type { SamplerParams } from './sampling-params.js';
import { LLAMA, promptIds } from './testing.js';
import { hostWaits, pipelinedStep, submitted } from './token-feedback.js';
import { Worker } from './worker.js';

const params = (o: Partial<SamplerParams> = {}): SamplerParams => ({
  temperature: 0.8,
  topP: 0.95,
  topK: 0,
  minP: 0,
  seed: '7',
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  logitBias: null,
  promptLogprobs: null,
  ...o,
});

function newRequest(id: string, prompt: number[], blocks: number[], data: SamplerParams) {
  return {
    requestId: id,
    parentRequestId: id,
    index: 0,
    promptTokenIds: prompt,
    outputTokenIds: [],
    blockIds: blocks,
    numComputedTokens: 0,
    numScheduledTokens: prompt.length,
    sample: true,
    maskStopTokens: false,
    eosTokenIds: [],
    stopTokenIds: [],
    logprobs: null,
    data,
  };
}

const decode = (id: string, computed: number) => ({
  requestId: id,
  newTokenIds: [],
  newBlockIds: [],
  numComputedTokens: computed,
  numScheduledTokens: 1,
  sample: true,
  maskStopTokens: false,
});

function step(stepId: number, o: Partial<SchedulerOutput>): SchedulerOutput {
  const s = {
    stepId,
    newRequests: [],
    cachedRequests: [],
    finishedRequestIds: [],
    totalNumScheduledTokens: 0,
    ...o,
  };
  s.totalNumScheduledTokens =
    s.newRequests.reduce((a, n) => a + n.numScheduledTokens, 0) +
    s.cachedRequests.reduce((a, c) => a + c.numScheduledTokens, 0);
  return s;
}

const pa = promptIds(21, 1);
const pb = promptIds(14, 2);
const pc = promptIds(9, 3);
// Steps are handed over back to back, so a step is built before the ones ahead of it resolved,
// except where it waits for a token on the host (what comes after such a wait is built at once).
//   0: a, b prefill
//   1: c prefill (penalties) beside a, b decoding: both fed back from step 0
//   2: a, fed back from step 1
//   3: b, whose token step 1 sampled (not the previous step): from the host
//   4: a (its token is from step 2: from the host) and c (penalties: its ids on the host first)
//   5: a, fed back from step 4
const steps: SchedulerOutput[] = [
  step(0, {
    newRequests: [
      newRequest('a', pa, [0, 1], params()),
      newRequest('b', pb, [2, 3], params({ seed: '8', temperature: 0 })),
    ],
  }),
  step(1, {
    cachedRequests: [decode('a', 21), decode('b', 14)],
    newRequests: [newRequest('c', pc, [4, 5], params({ repetitionPenalty: 1.5, seed: '9' }))],
  }),
  step(2, { cachedRequests: [decode('a', 22)] }),
  step(3, { cachedRequests: [decode('b', 15)] }),
  step(4, { cachedRequests: [decode('a', 23), decode('c', 9)] }),
  step(5, { cachedRequests: [decode('a', 24)] }),
  step(6, { finishedRequestIds: ['a', 'b', 'c'] }),
];

let allocator: Allocator;
let model: Model;
beforeAll(async () => {
  allocator = await Allocator.create({ device: 'cpu' });
  model = await loadModel(LLAMA, { allocator, onProgress: () => undefined });
});
afterAll(async () => {
  model.dispose();
  await allocator.dispose();
});

async function drive(pipeline: boolean) {
  const worker = await Worker.create({
    config: model.config,
    weights: model.weights,
    allocator,
    numKvBlocks: 8,
    blockSize: 16,
    maxModelLen: 64,
    pipeline,
  });
  const batches: SequenceStep[][] = [];
  const execute = ModelRunner.prototype.execute;
  vi.spyOn(worker.runner, 'execute').mockImplementation(function (this: ModelRunner, b, o) {
    batches.push([...b]);
    return execute.call(this, b, o);
  });
  try {
    const outs = await Promise.all(steps.map((s) => worker.execute(s)));
    return { outs: outs.map((o) => o.sampled), batches };
  } finally {
    vi.restoreAllMocks();
    await worker.dispose();
  }
}

describe('pipelined Worker', () => {
  it('feeds back what it can, waits on the host for the rest, and samples what the synchronous one does', async () => {
    const sync = await drive(false);
    const piped = await drive(true);
    expect(piped.outs).toEqual(sync.outs);
    expect(piped.outs[4]!.map((s) => s.requestId)).toEqual(['a', 'c']);
    const fed = piped.batches.map((b) => b.map((s) => s.feedback ?? null));
    // Rows: new requests first, then the continuing ones, in diff order.
    expect(fed).toEqual([[null, null], [null, 0, 1], [1], [null], [null, null], [0]]);
    expect(sync.batches.every((b) => b.every((s) => s.feedback === undefined))).toBe(true);
  });
});

describe('token feedback bookkeeping', () => {
  it('marks pending tokens, tells which must reach the host, and refuses to confirm one early', async () => {
    const states = new RequestStates();
    const rows = states.apply(step(0, { newRequests: [newRequest('a', pa, [0, 1], params())] }));
    let release!: (v: ExecuteResult) => void;
    const result = new Promise<ExecuteResult>((r) => {
      release = r;
    });
    const sub = submitted(rows, result);
    const state = rows[0]!.state;
    expect(state.outputTokenIds).toEqual([PENDING_TOKEN]);
    const next = states.apply(step(1, { cachedRequests: [decode('a', 21)] }));
    expect(hostWaits(next, sub)).toEqual([]);
    expect(pipelinedStep(next[0]!, sub)).toEqual({
      tokens: [],
      feedback: 0,
      blockTable: [0, 1],
      contextLength: 22,
    });
    // From anything but the previous step it must be on the host first.
    const other = submitted([], Promise.resolve({ logits: new Float32Array(0) }));
    expect(hostWaits(next, other)).toEqual([sub.filled]);
    expect(() => pipelinedStep(next[0]!, other)).toThrow(/still being sampled/);
    expect(() =>
      states.apply(step(2, { cachedRequests: [{ ...decode('a', 22), newTokenIds: [5] }] })),
    ).toThrow(/has not reached this worker yet/);
    release({ logits: new Float32Array(0), sampled: { tokenIds: Int32Array.from([42]) } });
    await sub.filled;
    expect(state.outputTokenIds).toEqual([42]);
    expect(state.pending).toEqual([]);
  });
});
