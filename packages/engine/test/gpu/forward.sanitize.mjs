// One full forward pass under compute-sanitizer (sanitize.sh): a fixture (fused q/k/v and
// gate/up, bf16) prefilled, then decoded through CUDA-graph replays with sampling on the device,
// and a Qwen3 fixture (per-head q/k norm, separate q/k/v) in fp16 the same way, eagerly and then
// from graphs, at a batch of 3 (bucket 4: padded rows write slot -1). Exits non-zero on any error.
import { join } from 'node:path';
import { Stream } from '@x/core';
import { Allocator } from '@x/cumem';
import { checkKernelErrors } from '@x/kernels';
import { loadModelConfig } from '../../src/config.ts';
import { ModelRunner } from '../../src/model-runner.ts';
import { loadWeights } from '../../src/weights.ts';
import { DEV, FIXTURES } from './util.mjs';

const allocator = await Allocator.create({ device: DEV });
for (const [name, dtype] of [
  ['llama-v4', 'bf16'],
  ['qwen3-v5', 'f16'],
]) {
  const dir = join(FIXTURES, name);
  const config = await loadModelConfig(dir);
  const weights = await loadWeights(dir, config, { allocator, dtype, onProgress: () => {} });
  for (const enforceEager of [true, false]) {
    const stream = Stream.create(DEV);
    const runner = await ModelRunner.create({
      config,
      weights,
      allocator,
      stream,
      numKvBlocks: 12,
      blockSize: 16,
      maxModelLen: 64,
      maxNumSeqs: 4,
      enforceEager,
    });
    const seqs = [0, 1, 2].map((i) => ({
      prompt: Array.from({ length: 5 + 9 * i }, (_, j) => (j * 31 + i) % config.vocabSize),
      blockTable: [4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3],
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
    for (let k = 1; k <= 3; k++) {
      const r = await runner.execute(
        seqs.map((s, i) => ({
          tokens: [next[i]],
          blockTable: s.blockTable,
          contextLength: s.prompt.length + k,
        })),
        {
          sample: {
            rows: seqs.map((_, i) => ({ temperature: 0.8, seed: i, step: k })),
            logprobs: true,
            topLogprobs: 4,
          },
        },
      );
      next = [...r.sampled.tokenIds];
    }
    await checkKernelErrors(stream);
    console.log(
      `# ${name} ${dtype} ${enforceEager ? 'eager' : 'graphs'}: ok, last ids ${next.join(',')}`,
    );
    await runner.dispose();
    stream.dispose();
  }
  weights.dispose();
}
await allocator.dispose();
console.log('# forward.sanitize: done');
