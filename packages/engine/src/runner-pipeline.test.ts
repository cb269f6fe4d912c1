// Pipelined steps on the CPU device (whose stream mirrors CUDA's ordering): steps enqueued back to
// back, each taking the tokens the previous step sampled from the device (SequenceStep.feedback),
// give exactly the tokens and log-probabilities of the same steps run one at a time with the ids
// read back in between — through batch reorderings, rows leaving and joining, a mixed prefill +
// decode step, steps that read logits back (they wait for the steps in flight), and a sampler that
// grows mid-pipeline. Feedback that names no sampled row is a typed error.
import { InvalidArgumentError } from '@x/core';
import { Allocator } from '@x/cumem';
import type { SamplingRow } from '@x/kernels';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExecuteOptions, ExecuteResult, ModelRunner } from './model-runner.js';
import type { SequenceStep } from './models/step-inputs.js';
import { TINY_LLAMA_CONFIG, tinyCpuRunner } from './test-util.js';

const config = TINY_LLAMA_CONFIG;
const BLOCK = 8;
const PER_SEQ = 6; // blocks per sequence: up to 48 tokens

let allocator: Allocator;
beforeAll(async () => {
  allocator = await Allocator.create({ device: 'cpu' });
});
afterAll(async () => {
  await allocator.dispose();
});

const setup = () =>
  tinyCpuRunner(allocator, { seed: 21, numKvBlocks: 8 * PER_SEQ, blockSize: BLOCK });

const prompts = [5, 9, 3, 12, 7, 4].map((len, s) =>
  Array.from({ length: len }, (_, j) => 3 + ((s * 17 + j * 29) % 95)),
);
const blocks = (s: number) => Array.from({ length: PER_SEQ }, (_, j) => s * PER_SEQ + j);

/** One row of a schedule: a sequence's prompt (prefill) or its next token (decode). */
type Row = { seq: number; prefill?: boolean };
interface PlannedStep {
  rows: Row[];
  /** Options besides `sample` (logits read-back, more top log-probabilities). */
  extra?: Pick<ExecuteOptions, 'logits'> & { topLogprobs?: number };
}

// Rows reorder, leave (seq 1 after step 3) and join (seq 4 as a prefill beside decodes, seq 5 as
// a fifth row: the sampler grows); step 5 reads logits back and step 7 asks for more top ids.
const schedule: PlannedStep[] = [
  { rows: [0, 1, 2, 3].map((seq) => ({ seq, prefill: true })) },
  { rows: [0, 1, 2, 3].map((seq) => ({ seq })) },
  { rows: [3, 2, 1, 0].map((seq) => ({ seq })) },
  { rows: [1, 3, 0, 2].map((seq) => ({ seq })) },
  { rows: [{ seq: 0 }, { seq: 2 }, { seq: 4, prefill: true }, { seq: 3 }] },
  { rows: [4, 0, 3, 2].map((seq) => ({ seq })), extra: { logits: true } },
  { rows: [{ seq: 2 }, { seq: 4 }, { seq: 5, prefill: true }, { seq: 0 }, { seq: 3 }] },
  { rows: [0, 2, 3, 4, 5].map((seq) => ({ seq })), extra: { topLogprobs: 3 } },
  { rows: [5, 4, 3, 2, 0].map((seq) => ({ seq })) },
  { rows: [5, 0].map((seq) => ({ seq })) },
];

function samplingRow(seq: number, step: number): SamplingRow {
  if (seq % 3 === 0) return { temperature: 0 };
  if (seq % 3 === 1) return { temperature: 0.9, topK: 20, seed: BigInt(seq), step };
  return { temperature: 1.1, topP: 0.9, minP: 0.02, seed: BigInt(100 + seq), step };
}

/**
 * Runs the schedule. Sequential: each step awaited, decode tokens passed as ids. Pipelined: every
 * step enqueued before any result is read, decode tokens fed back from the previous step's row.
 */
async function run(runner: ModelRunner, pipelined: boolean): Promise<ExecuteResult[]> {
  const length = new Map<number, number>(); // tokens of each sequence in the cache
  const last = new Map<number, number>(); // sequential: the last sampled id per sequence
  const generated = new Map<number, number>(); // tokens sampled so far (the seeded draw's step)
  let prevRows: Row[] = [];
  const pending: Promise<ExecuteResult>[] = [];
  // Hold the stream while steps are staged: each is staged before the ones ahead of it ran, so
  // a slot reused too early, or a token read before it was sampled, would show.
  if (pipelined) runner.stream.delay(30);
  for (const planned of schedule) {
    const batch: SequenceStep[] = planned.rows.map(({ seq, prefill }) => {
      if (prefill) {
        length.set(seq, prompts[seq]!.length);
        return { tokens: prompts[seq]!, blockTable: blocks(seq), contextLength: length.get(seq)! };
      }
      length.set(seq, length.get(seq)! + 1);
      const step = { blockTable: blocks(seq), contextLength: length.get(seq)! };
      if (!pipelined) return { tokens: [last.get(seq)!], ...step };
      return { tokens: [], feedback: prevRows.findIndex((r) => r.seq === seq), ...step };
    });
    const rows = planned.rows.map(({ seq }) => samplingRow(seq, generated.get(seq) ?? 0));
    for (const { seq } of planned.rows) generated.set(seq, (generated.get(seq) ?? 0) + 1);
    const { topLogprobs, ...extra } = planned.extra ?? {};
    const result = runner.execute(batch, {
      sample: { rows, logprobs: true, ...(topLogprobs ? { topLogprobs } : {}) },
      ...extra,
    });
    pending.push(result);
    if (!pipelined) {
      const r = await result;
      planned.rows.forEach(({ seq }, i) => {
        last.set(seq, r.sampled!.tokenIds[i]!);
      });
    }
    prevRows = planned.rows;
  }
  return Promise.all(pending);
}

describe('ModelRunner: pipelined steps with tokens fed back on the device', () => {
  it('give exactly the tokens and log-probabilities of the same steps run one at a time', async () => {
    const { runner, dispose } = await setup();
    try {
      const sequential = await run(runner, false);
      const pipelined = await run(runner, true);
      expect(pipelined.length).toBe(schedule.length);
      pipelined.forEach((p, k) => {
        const s = sequential[k]!;
        expect([...p.sampled!.tokenIds], `step ${k} ids`).toEqual([...s.sampled!.tokenIds]);
        expect([...p.sampled!.logprobs!], `step ${k} logprobs`).toEqual([...s.sampled!.logprobs!]);
        expect([...p.sampled!.ranks!]).toEqual([...s.sampled!.ranks!]);
        expect([...p.logits]).toEqual([...s.logits]);
        if (s.sampled!.topIds) expect([...p.sampled!.topIds!]).toEqual([...s.sampled!.topIds]);
      });
      expect(pipelined[5]!.logits.length).toBe(4 * config.vocabSize);
      // Sampling really varied: the seeded rows did not all pick the argmax.
      const ids = new Set(pipelined.flatMap((p) => [...p.sampled!.tokenIds]));
      expect(ids.size).toBeGreaterThan(5);
    } finally {
      await dispose();
    }
  });

  it('refuses feedback that names no row the previous step sampled on the device', async () => {
    const { runner, dispose } = await setup();
    try {
      const prefill = (s: number) => ({
        tokens: prompts[s]!,
        blockTable: blocks(s),
        contextLength: prompts[s]!.length,
      });
      const fed = (s: number, row: number) => ({
        tokens: [],
        feedback: row,
        blockTable: blocks(s),
        contextLength: prompts[s]!.length + 1,
      });
      await expect(runner.execute([fed(0, 0)], { sample: { rows: [null] } })).rejects.toThrow(
        /did not sample on the device/,
      );
      await runner.execute([prefill(0)]); // logits only: nothing sampled on the device
      await expect(runner.execute([fed(0, 0)])).rejects.toThrow(InvalidArgumentError);
      await runner.execute([prefill(0), prefill(1)], { sample: { rows: [null, {}] } });
      await expect(runner.execute([fed(0, 0)])).rejects.toThrow(/batch\[0\]\.feedback/);
      // The failed step left nothing to feed back from either.
      await expect(runner.execute([fed(1, 1)])).rejects.toThrow(/did not sample/);
      await runner.execute([prefill(0), prefill(1)], { sample: { rows: [null, {}] } });
      await expect(runner.execute([fed(1, 2)])).rejects.toThrow(/\[0, 2\)/);
      // The pipeline does not span a sleep of `activations`: nothing to feed back after it.
      await runner.execute([prefill(0)], { sample: { rows: [{}] } });
      await allocator.sleep({ level: 1, tags: ['activations'] });
      await allocator.wake();
      await expect(runner.execute([fed(0, 0)])).rejects.toThrow(/a sleep came between/);
      await expect(
        runner.execute([{ tokens: [], blockTable: blocks(0), contextLength: 1 }]),
      ).rejects.toThrow(/batch\[0\]\.tokens/);
    } finally {
      await dispose();
    }
  });
});
