// ExecuteOptions.sample (sampling on the runner's device and stream), the decode batch buckets
// and the staging of padded rows — device-generic code, checked here on the CPU device.
import { HostBuffer, InvalidArgumentError, Stream, Tensor } from '@x/core';
import { Allocator } from '@x/cumem';
import { type SamplingRow, sample } from '@x/kernels';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { weightDType } from './load-model.js';
import { graphBuckets } from './model-runner.js';
import { stageInputs } from './models/step-inputs.js';
import { Workspace } from './models/workspace.js';
import { TINY_LLAMA_CONFIG, tinyCpuRunner } from './test-util.js';

const config = TINY_LLAMA_CONFIG;

let allocator: Allocator;
beforeAll(async () => {
  allocator = await Allocator.create({ device: 'cpu' });
});
afterAll(async () => {
  await allocator.dispose();
});

const setup = () => tinyCpuRunner(allocator, { seed: 5, numKvBlocks: 12, blockSize: 8 });

/** The reference: the kernels' sampler over logits read back to the host. */
async function sampleOnHost(logits: Float32Array, rows: SamplingRow[]) {
  const v = config.vocabSize;
  const b = rows.length;
  const buf = HostBuffer.alloc(b * v * 4 + b * 12);
  new Float32Array(buf.buffer, 0, b * v).set(logits);
  const t = (dtype: 'f32' | 'i32', off: number, shape: number[]) =>
    new Tensor({ ptr: buf.ptr + BigInt(off), dtype, shape, device: 'cpu' });
  const s = Stream.create('cpu');
  const o = b * v * 4;
  sample(s, t('f32', 0, [b, v]), rows, {
    sampled: t('i32', o, [b]),
    sampledLogprobs: t('f32', o + 4 * b, [b]),
    sampledRanks: t('i32', o + 8 * b, [b]),
  });
  await s.synchronize();
  const out = {
    ids: [...new Int32Array(buf.buffer, o, b)],
    logprobs: [...new Float32Array(buf.buffer, o + 4 * b, b)],
    ranks: [...new Int32Array(buf.buffer, o + 8 * b, b)],
  };
  s.dispose();
  buf.dispose();
  return out;
}

describe('ModelRunner.execute with sample', () => {
  it('samples each sequence on the runner stream exactly as the sampler over the logits', async () => {
    const { runner, dispose } = await setup();
    try {
      const batch = [
        { tokens: [3, 4, 5, 6, 7], blockTable: [0], contextLength: 5 },
        { tokens: [9, 10, 11], blockTable: [1], contextLength: 3 },
        { tokens: [12, 13], blockTable: [2, 3], contextLength: 2 },
      ];
      const rows: SamplingRow[] = [
        { temperature: 0 },
        { temperature: 0.8, topK: 20, seed: 7, step: 3 },
        { temperature: 1.2, topP: 0.9, minP: 0.05, seed: 11 },
      ];
      const withLogits = await runner.execute(batch, {
        sample: { rows: [rows[0]!, null, rows[2]!], logprobs: true, topLogprobs: 3 },
        logits: true,
      });
      const again = await runner.execute(batch, { sample: { rows, logprobs: true } });
      expect(again.logits.length).toBe(0); // logits stay on the device unless asked for
      const ref = await sampleOnHost(withLogits.logits, rows);
      expect([...again.sampled!.tokenIds]).toEqual(ref.ids);
      expect([...again.sampled!.ranks!]).toEqual(ref.ranks);
      expect([...again.sampled!.logprobs!]).toEqual(ref.logprobs);
      const first = withLogits.sampled!;
      expect([...first.tokenIds]).toEqual([ref.ids[0], -1, ref.ids[2]]);
      expect(first.topIds!.length).toBe(9);
      // Greedy's top-1 log-probability is the sampled one; ids are the argmax.
      const v = config.vocabSize;
      const row0 = withLogits.logits.subarray(0, v);
      expect(first.topIds![0]).toBe(row0.indexOf(Math.max(...row0)));
      expect(first.topLogprobs![0]).toBeCloseTo(first.logprobs![0]!, 5);
    } finally {
      await dispose();
    }
  });

  it('refuses a sample request that does not match the batch', async () => {
    const { runner, dispose } = await setup();
    try {
      const batch = [{ tokens: [3], blockTable: [0], contextLength: 1 }];
      await expect(runner.execute(batch, { sample: { rows: [] } })).rejects.toThrow(
        InvalidArgumentError,
      );
      await expect(
        runner.execute(batch, { sample: { rows: [{}], topLogprobs: 65 } }),
      ).rejects.toThrow(/topLogprobs/);
    } finally {
      await dispose();
    }
  });
});

describe('decode buckets and padded staging', () => {
  it('buckets 1, 2, 4 and multiples of 8, the last covering the maximum', () => {
    expect(graphBuckets(1)).toEqual([1]);
    expect(graphBuckets(3)).toEqual([1, 2, 4]);
    expect(graphBuckets(20)).toEqual([1, 2, 4, 8, 16, 24]);
    expect(graphBuckets(256).at(-1)).toBe(256);
    expect(graphBuckets(256).length).toBe(35);
  });

  it('stages padded rows as idle one-token sequences written to slot -1', () => {
    const ws = new Workspace(allocator, {
      tokens: 4,
      seqs: 4,
      maxBlocksPerSeq: 3,
      hidden: 8,
      qWidth: 8,
      kvWidth: 8,
      intermediate: 8,
      vocab: 10,
    });
    try {
      stageInputs(
        ws,
        [
          { tokens: [5], blockTable: [2, 7], contextLength: 12 },
          { tokens: [6], blockTable: [4], contextLength: 3 },
        ],
        8,
        4,
      );
      expect([...ws.stagingView('ids', Int32Array)]).toEqual([5, 6, 0, 0]);
      expect([...ws.stagingView('positions', Int32Array)]).toEqual([11, 2, 0, 0]);
      expect([...ws.stagingView('slots', BigInt64Array)]).toEqual([59n, 34n, -1n, -1n]);
      expect([...ws.stagingView('seqLens', Int32Array)]).toEqual([12, 3, 1, 1]);
      expect([...ws.stagingView('queryStartLoc', Int32Array)]).toEqual([0, 1, 2, 3, 4]);
      expect([...ws.stagingView('lastIndex', Int32Array)]).toEqual([0, 1, 2, 3]);
      expect([...ws.stagingView('blockTables', Int32Array)]).toEqual([
        2, 7, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0,
      ]);
    } finally {
      ws.dispose();
    }
  });
});

describe('weightDType', () => {
  it('defaults to what the device computes in and refuses what it cannot', () => {
    expect(weightDType(undefined, 'bf16', 'cpu')).toBe('bf16');
    expect(weightDType(undefined, 'f16', 'cpu')).toBe('f32');
    expect(weightDType(undefined, 'f32', 'cuda')).toBe('bf16');
    expect(weightDType(undefined, 'f16', 'cuda')).toBe('f16');
    expect(weightDType('f16', 'bf16', 'cuda')).toBe('f16');
    expect(() => weightDType('f16', 'bf16', 'cpu')).toThrow(/"f32" or "bf16" on the CPU/);
    expect(() => weightDType('f32', 'f32', 'cuda')).toThrow(/"bf16" or "f16" on CUDA/);
  });
});
