// CUDA graphs of the decode step, sampling on the device, and sleep/wake, on a random bf16 Llama
// with tensor-core head sizes (headDim 128, GQA 2):
//   - decode batches of 1, 3, 5 and 17 sequences (buckets 1, 4, 8, 24: padded rows write slot -1)
//     replayed from graphs give exactly the bits of an enforceEager runner over the same weights
//     and inputs, step after step (logits, and ids sampled on the device: greedy and seeded);
//   - after a cumem sleep(level 1)/wake cycle (poisoned: discarded pages read as NaN) the same
//     graphs, not re-captured, give the same bits again once the KV cache is recomputed; a step
//     while asleep is refused;
//   - pipelined decode: steps enqueued back to back behind a held stream, each taking the previous
//     step's sampled ids from the device (SequenceStep.feedback, indexCopy), give exactly the
//     ids and log-probabilities of the same steps run one at a time (batches 1, 5, 17);
//   - the serving Worker on CUDA samples on the device (greedy, with log-probabilities), pipelined
//     (diffs handed over back to back, tokens fed back) and synchronous alike.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Stream } from '@x/core';
import { Allocator } from '@x/cumem';
import { checkKernelErrors } from '@x/kernels';
import { ModelRunner } from '../../src/model-runner.ts';
import { randomWeights } from '../../src/models/random-weights.ts';
import { Worker } from '../../src/serving/worker.ts';
import { DEV, RANDOM_HD128, record, sameBits } from './util.mjs';

const config = RANDOM_HD128;
const BLOCK = 16;
const MAX_LEN = 512;
const PER_SEQ = MAX_LEN / BLOCK;

let allocator;
let weights;
before(async () => {
  allocator = await Allocator.create({ device: DEV, poison: true });
  weights = await randomWeights(config, { allocator, seed: 9, dtype: 'bf16' });
});
after(async () => {
  weights.dispose();
  await allocator.dispose();
});

async function runner(enforceEager) {
  const stream = Stream.create(DEV);
  const r = await ModelRunner.create({
    config,
    weights,
    allocator,
    stream,
    numKvBlocks: 24 * PER_SEQ,
    blockSize: BLOCK,
    maxModelLen: MAX_LEN,
    maxNumSeqs: 32,
    enforceEager,
  });
  return {
    r,
    stream,
    async close() {
      await checkKernelErrors(stream);
      await r.dispose();
      stream.dispose();
    },
  };
}

/** n sequences of different prompt lengths (37·i mod 200 + 5), each with its own blocks. */
function sequences(n) {
  return Array.from({ length: n }, (_, i) => {
    const len = ((37 * i) % 200) + 5;
    return {
      prompt: Array.from({ length: len }, (_, j) => (j * 13 + i * 7 + 3) % config.vocabSize),
      blockTable: Array.from({ length: PER_SEQ }, (_, j) => i * PER_SEQ + j),
    };
  });
}

const rowsFor = (n, step) =>
  Array.from({ length: n }, (_, i) =>
    i % 2 === 0 ? { temperature: 0 } : { temperature: 0.9, topP: 0.95, seed: 100 + i, step },
  );

/** Prefills every sequence, then decodes `steps` tokens; returns each step's logits and ids. */
async function decode(r, seqs, steps) {
  await r.execute(
    seqs.map((s) => ({
      tokens: s.prompt,
      blockTable: s.blockTable,
      contextLength: s.prompt.length,
    })),
  );
  const out = [];
  let next = seqs.map((s) => s.prompt[s.prompt.length - 1]);
  for (let k = 0; k < steps; k++) {
    const res = await r.execute(
      seqs.map((s, i) => ({
        tokens: [next[i]],
        blockTable: s.blockTable,
        contextLength: s.prompt.length + k + 1,
      })),
      { sample: { rows: rowsFor(seqs.length, k), logprobs: true }, logits: true },
    );
    assert.ok(
      res.logits.every(Number.isFinite),
      `step ${k}: non-finite logits over ${seqs.length} rows`,
    );
    out.push(res);
    next = [...res.sampled.tokenIds];
  }
  return out;
}

function assertSameSteps(label, a, b) {
  assert.equal(a.length, b.length);
  a.forEach((x, k) => {
    assert.ok(sameBits(x.logits, b[k].logits), `${label}: step ${k} logits differ`);
    assert.deepEqual(
      [...x.sampled.tokenIds],
      [...b[k].sampled.tokenIds],
      `${label}: step ${k} ids`,
    );
    assert.ok(sameBits(x.sampled.logprobs, b[k].sampled.logprobs), `${label}: step ${k} logprobs`);
  });
}

describe('decode CUDA graphs', () => {
  it('replay equals eager bit for bit (batches 1, 3, 5, 17), and survives sleep(level 1)/wake', async () => {
    const g = await runner(false);
    const e = await runner(true);
    try {
      const results = {};
      for (const n of [1, 3, 5, 17]) {
        const seqs = sequences(n);
        const eager = await decode(e.r, seqs, 4);
        const graphs = await decode(g.r, seqs, 4);
        assertSameSteps(`batch ${n}`, graphs, eager);
        results[n] = graphs;
      }
      assert.equal(e.r.graphCount, 0, 'enforceEager captures nothing');
      const captured = g.r.graphCount;
      assert.equal(captured, 4, 'one graph per bucket used (1, 4, 8, 24)');

      await allocator.sleep({ level: 1 });
      await assert.rejects(
        g.r.execute([{ tokens: [1], blockTable: [0], contextLength: 1 }]),
        /asleep/,
      );
      await allocator.wake();
      // The KV cache was discarded (poisoned): recompute it, as the scheduler does after a wake.
      for (const n of [17, 5, 1, 3]) {
        const again = await decode(g.r, sequences(n), 4);
        assertSameSteps(`batch ${n} after sleep/wake`, again, results[n]);
      }
      assert.equal(g.r.graphCount, captured, 'the graphs were replayed, not captured again');
      record('graphs', {
        batches: [1, 3, 5, 17],
        steps: 4,
        graphs: captured,
        sleepWake: 'same bits',
      });
    } finally {
      await g.close();
      await e.close();
    }
  });
});

/** Prefill (sampled) then `steps` sampled decodes; pipelined: all enqueued at once, fed back. */
async function decodeFedBack(r, seqs, steps, pipelined) {
  if (pipelined) r.stream.delay(20); // every step is staged before the ones ahead of it ran
  const results = [
    r.execute(
      seqs.map((s) => ({
        tokens: s.prompt,
        blockTable: s.blockTable,
        contextLength: s.prompt.length,
      })),
      { sample: { rows: rowsFor(seqs.length, 0), logprobs: true } },
    ),
  ];
  let ids = pipelined ? undefined : [...(await results[0]).sampled.tokenIds];
  for (let k = 1; k <= steps; k++) {
    const p = r.execute(
      seqs.map((s, i) => ({
        ...(pipelined ? { tokens: [], feedback: i } : { tokens: [ids[i]] }),
        blockTable: s.blockTable,
        contextLength: s.prompt.length + k,
      })),
      { sample: { rows: rowsFor(seqs.length, k), logprobs: true } },
    );
    results.push(p);
    if (!pipelined) ids = [...(await p).sampled.tokenIds];
  }
  return Promise.all(results);
}

describe('pipelined decode on CUDA', () => {
  it('back-to-back steps fed back on the device = the same steps one at a time, bit for bit (batches 1, 5, 17)', async () => {
    const g = await runner(false);
    try {
      for (const n of [1, 5, 17]) {
        const seqs = sequences(n);
        const one = await decodeFedBack(g.r, seqs, 6, false);
        const piped = await decodeFedBack(g.r, seqs, 6, true);
        one.forEach((x, k) => {
          const y = piped[k];
          assert.deepEqual(
            [...y.sampled.tokenIds],
            [...x.sampled.tokenIds],
            `batch ${n} step ${k}`,
          );
          assert.ok(
            sameBits(y.sampled.logprobs, x.sampled.logprobs),
            `batch ${n} step ${k} logprobs`,
          );
        });
      }
      assert.equal(g.r.graphCount, 3, 'decode steps replayed graphs (buckets 1, 8, 24)');
      record('pipelined', { batches: [1, 5, 17], steps: 6, result: 'same bits' });
    } finally {
      await g.close();
    }
  });
});

describe('serving Worker on CUDA', () => {
  it('samples on the device: greedy ids equal the runner argmax, with log-probabilities (pipelined and not)', async () => {
    const ref = await runner(true);
    const workers = [];
    try {
      const tokensOf = {};
      for (const [name, pipeline, backToBack] of [
        ['pipelined', true, false],
        ['pipelined, diffs back to back', true, true],
        ['synchronous', false, false],
      ]) {
        const w = await Worker.create({
          config,
          weights,
          allocator,
          numKvBlocks: 2 * PER_SEQ,
          blockSize: BLOCK,
          maxModelLen: MAX_LEN,
          pipeline,
        });
        workers.push(w);
        tokensOf[name] = await workerTokens(w, backToBack);
      }
      const tokens = tokensOf.pipelined.tokens;
      const lp = tokensOf.pipelined.lp;
      assert.deepEqual(tokensOf['pipelined, diffs back to back'].tokens, tokens);
      assert.deepEqual(tokensOf.synchronous.tokens, tokens);
      const prompt = sequences(2)[1].prompt;
      assert.equal(lp.rank, 1);
      assert.equal(lp.topTokenIds.length, 2);
      assert.equal(lp.topTokenIds[0], tokens[0]);
      // The same greedy path through a runner's logits.
      const bt = Array.from({ length: PER_SEQ }, (_, i) => PER_SEQ + i);
      let { logits } = await ref.r.execute([
        { tokens: prompt, blockTable: bt, contextLength: prompt.length },
      ]);
      const want = [];
      for (let k = 0; k < 4; k++) {
        let best = 0;
        for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
        want.push(best);
        ({ logits } = await ref.r.execute([
          { tokens: [best], blockTable: bt, contextLength: prompt.length + k + 1 },
        ]));
      }
      assert.deepEqual(tokens, want);
      record('worker', { tokens, logprob: lp.logprob, pipelined: 'same tokens' });
    } finally {
      for (const w of workers) await w.dispose();
      await ref.close();
    }
  });
});

/** One greedy request through a Worker: a prefill then 3 decodes, confirmed or back to back. */
async function workerTokens(w, backToBack) {
  let fedBack = 0;
  const execute = w.runner.execute.bind(w.runner);
  w.runner.execute = (batch, options) => {
    fedBack += batch.filter((q) => q.feedback !== undefined).length;
    return execute(batch, options);
  };
  const prompt = sequences(2)[1].prompt;
  const blockIds = Array.from({ length: PER_SEQ }, (_, i) => i);
  const data = {
    temperature: 0,
    topP: 1,
    topK: 0,
    minP: 0,
    seed: '5',
    presencePenalty: 0,
    frequencyPenalty: 0,
    repetitionPenalty: 1,
    logitBias: null,
    promptLogprobs: null,
  };
  const firstP = w.execute({
    stepId: 0,
    totalNumScheduledTokens: prompt.length,
    finishedRequestIds: [],
    cachedRequests: [],
    newRequests: [
      {
        requestId: 'r',
        parentRequestId: 'r',
        index: 0,
        promptTokenIds: prompt,
        outputTokenIds: [],
        blockIds,
        numComputedTokens: 0,
        numScheduledTokens: prompt.length,
        sample: true,
        maskStopTokens: false,
        eosTokenIds: [],
        stopTokenIds: [],
        logprobs: 2,
        data,
      },
    ],
  });
  const outs = [firstP];
  const tokens = backToBack ? [] : [(await firstP).sampled[0].tokenIds[0]];
  for (let k = 1; k < 4; k++) {
    const out = w.execute({
      stepId: k,
      totalNumScheduledTokens: 1,
      finishedRequestIds: [],
      newRequests: [],
      cachedRequests: [
        {
          requestId: 'r',
          newTokenIds: backToBack ? [] : [tokens[k - 1]],
          newBlockIds: [],
          numComputedTokens: prompt.length + k - 1,
          numScheduledTokens: 1,
          sample: true,
          maskStopTokens: false,
        },
      ],
    });
    outs.push(out);
    if (!backToBack) tokens.push((await out).sampled[0].tokenIds[0]);
  }
  const all = await Promise.all(outs);
  await w.execute({
    stepId: 4,
    totalNumScheduledTokens: 0,
    finishedRequestIds: ['r'],
    cachedRequests: [],
    newRequests: [],
  });
  // Handed over back to back, each decode took its token from the device.
  assert.equal(fedBack, backToBack && w.pipelined ? 3 : 0, 'fed-back decode rows');
  return {
    tokens: all.map((o) => o.sampled[0].tokenIds[0]),
    lp: all[0].sampled[0].logprobs[0],
  };
}
