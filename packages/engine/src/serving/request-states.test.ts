import type { SchedulerOutput } from '@x/scheduler';
import { describe, expect, it } from 'vitest';
import { RequestStates, sequenceStep } from './request-states.js';
import type { SamplerParams } from './sampling-params.js';

const data: SamplerParams = {
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  seed: '1',
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  logitBias: null,
  promptLogprobs: null,
};

function step(o: Partial<SchedulerOutput>): SchedulerOutput {
  return {
    stepId: 0,
    newRequests: [],
    cachedRequests: [],
    totalNumScheduledTokens: 1,
    finishedRequestIds: [],
    ...o,
  };
}

const newReq = {
  requestId: 'a',
  parentRequestId: 'a',
  index: 0,
  promptTokenIds: [10, 11, 12, 13, 14],
  outputTokenIds: [],
  blockIds: [7],
  numComputedTokens: 2, // a prefix hit covers two tokens
  numScheduledTokens: 3,
  sample: true,
  maskStopTokens: false,
  eosTokenIds: [2],
  stopTokenIds: [],
  logprobs: null,
  data,
};

describe('RequestStates (a worker applying the scheduler diff)', () => {
  it('builds each step from the state: new requests in full, then only new tokens and blocks', () => {
    const s = new RequestStates();
    const [r1] = s.apply(step({ newRequests: [newReq] }));
    expect(sequenceStep(r1!)).toEqual({ tokens: [12, 13, 14], blockTable: [7], contextLength: 5 });
    const [r2] = s.apply(
      step({
        cachedRequests: [
          {
            requestId: 'a',
            newTokenIds: [99],
            newBlockIds: [],
            numComputedTokens: 5,
            numScheduledTokens: 1,
            sample: true,
            maskStopTokens: false,
          },
        ],
      }),
    );
    expect(sequenceStep(r2!)).toEqual({ tokens: [99], blockTable: [7], contextLength: 6 });
    expect(r2!.state.outputTokenIds).toEqual([99]);
    // Async scheduling: the next step runs on the token this worker sampled, not yet confirmed.
    s.recordSampled(r2!.state, 77);
    const ahead = (confirm: number[], computed: number) =>
      s.apply(
        step({
          cachedRequests: [
            {
              requestId: 'a',
              newTokenIds: confirm,
              newBlockIds: [],
              numComputedTokens: computed,
              numScheduledTokens: 1,
              sample: true,
              maskStopTokens: false,
            },
          ],
        }),
      )[0]!;
    expect(sequenceStep(ahead([], 6)).tokens).toEqual([77]);
    s.recordSampled(r2!.state, 78);
    expect(sequenceStep(ahead([77], 7)).tokens).toEqual([78]); // 77 confirmed later
    expect(() => ahead([79], 8)).toThrow(/confirms token 79 .* sampled 78/);
    s.apply(step({ finishedRequestIds: ['a'] }));
    expect(s.size).toBe(0);
  });

  it('recomputes a preempted request (new again, with its output tokens) and rejects unknown ids', () => {
    const s = new RequestStates();
    const [r] = s.apply(
      step({
        newRequests: [
          {
            ...newReq,
            outputTokenIds: [50, 51],
            blockIds: [3],
            numComputedTokens: 0,
            numScheduledTokens: 7,
          },
        ],
      }),
    );
    expect(sequenceStep(r!).tokens).toEqual([10, 11, 12, 13, 14, 50, 51]);
    expect(() =>
      s.apply(
        step({
          cachedRequests: [
            {
              requestId: 'ghost',
              newTokenIds: [],
              newBlockIds: [],
              numComputedTokens: 0,
              numScheduledTokens: 1,
              sample: false,
              maskStopTokens: false,
            },
          ],
        }),
      ),
    ).toThrow(/unknown ghost/);
    expect(() =>
      s.apply(step({ newRequests: [{ ...newReq, requestId: 'b', data: undefined }] })),
    ).toThrow(/SamplerParams/);
  });
});
