// Full forward passes under compute-sanitizer (sanitize.sh): a fixture (fused q/k/v and gate/up,
// bf16) prefilled, then decoded through CUDA-graph replays with sampling on the device, and a
// Qwen3 fixture (per-head q/k norm, separate q/k/v) in fp16 the same way, eagerly and then from
// graphs, at a batch of 3 (bucket 4: padded rows write slot -1); then a random bf16 Llama with
// tensor-core head sizes (headDim 128) and one 300-token context, so decode attention splits its
// keys and a combine kernel merges them. Each ends with pipelined steps: enqueued
// back to back, their tokens fed back from the device (indexCopy). Exits non-zero on any error.
import { join } from 'node:path';
import { Stream } from '@x/core';
import { Allocator } from '@x/cumem';
import { checkKernelErrors } from '@x/kernels';
import { loadModelConfig } from '../../src/config.ts';
import { ModelRunner } from '../../src/model-runner.ts';
import { randomWeights } from '../../src/models/random-weights.ts';
import { loadWeights } from '../../src/weights.ts';
import { DEV, FIXTURES, RANDOM_HD128 } from './util.mjs';

const allocator = await Allocator.create({ device: DEV });

async function exercise(label, config, weights, { lengths, maxModelLen, enforceEager }) {
  const stream = Stream.create(DEV);
  const perSeq = Math.ceil(maxModelLen / 16);
  const runner = await ModelRunner.create({
    config,
    weights,
    allocator,
    stream,
    numKvBlocks: lengths.length * perSeq,
    blockSize: 16,
    maxModelLen,
    maxNumSeqs: 4,
    enforceEager,
  });
  const seqs = lengths.map((len, i) => ({
    prompt: Array.from({ length: len }, (_, j) => (j * 31 + i) % config.vocabSize),
    blockTable: Array.from({ length: perSeq }, (_, j) => i * perSeq + j),
  }));
  const first = await runner.execute(
    seqs.map((s) => ({
      tokens: s.prompt,
      blockTable: s.blockTable,
      contextLength: s.prompt.length,
    })),
    { sample: { rows: seqs.map(() => ({ temperature: 0 })) }, allLogits: true },
  );
  let next = [...first.sampled.tokenIds];
  const rows = (k) => seqs.map((_, i) => ({ temperature: 0.8, seed: i, step: k }));
  for (let k = 1; k <= 3; k++) {
    const r = await runner.execute(
      seqs.map((s, i) => ({
        tokens: [next[i]],
        blockTable: s.blockTable,
        contextLength: s.prompt.length + k,
      })),
      { sample: { rows: rows(k), logprobs: true, topLogprobs: 4 } },
    );
    next = [...r.sampled.tokenIds];
  }
  const piped = [];
  for (let k = 4; k <= 6; k++) {
    piped.push(
      runner.execute(
        seqs.map((s, i) => ({
          tokens: [],
          feedback: i,
          blockTable: s.blockTable,
          contextLength: s.prompt.length + k,
        })),
        { sample: { rows: rows(k), logprobs: true } },
      ),
    );
  }
  next = [...(await Promise.all(piped)).at(-1).sampled.tokenIds];
  await checkKernelErrors(stream);
  console.log(`# ${label} ${enforceEager ? 'eager' : 'graphs'}: ok, last ids ${next.join(',')}`);
  await runner.dispose();
  stream.dispose();
}

for (const [name, dtype] of [
  ['llama-v4', 'bf16'],
  ['qwen3-v5', 'f16'],
]) {
  const dir = join(FIXTURES, name);
  const config = await loadModelConfig(dir);
  const weights = await loadWeights(dir, config, { allocator, dtype, onProgress: () => {} });
  for (const enforceEager of [true, false]) {
    await exercise(`${name} ${dtype}`, config, weights, {
      lengths: [5, 14, 23],
      maxModelLen: 64,
      enforceEager,
    });
  }
  weights.dispose();
}

const weights = await randomWeights(RANDOM_HD128, { allocator, seed: 4, dtype: 'bf16' });
await exercise('random hd128 bf16, 300-token context', RANDOM_HD128, weights, {
  lengths: [300, 9, 40],
  maxModelLen: 512,
  enforceEager: false,
});
weights.dispose();
await allocator.dispose();
console.log('# forward.sanitize: done');
