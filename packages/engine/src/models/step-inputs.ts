import { InvalidArgumentError } from '@x/core';
import type { Workspace } from './workspace.js';

/** One sequence of a step: a prefill chunk (several tokens) or a decode token. */
export interface SequenceStep {
  /** Token ids this step feeds (≥ 1, or ≥ 0 with `feedback`). */
  tokens: readonly number[];
  /**
   * One more token after `tokens`, still on the device: the one the runner's previous step
   * sampled for its row `feedback` (that step must have sampled on the device, that row not
   * null). It is copied into this step's inputs on the stream, so this step can be enqueued
   * before the previous one's ids reach the host.
   */
  feedback?: number;
  /** The sequence's KV blocks in order; must cover `contextLength` tokens. */
  blockTable: readonly number[];
  /** Tokens of the sequence in the cache after this step, including this step's. */
  contextLength: number;
}

/** Tokens a sequence feeds this step: `tokens`, plus the fed-back one. */
export function stepTokenCount(s: SequenceStep): number {
  return s.tokens.length + (s.feedback === undefined ? 0 : 1);
}

/** Where a step's fed-back tokens go: token index `dst[k]` takes row `src[k]`'s sampled id. */
export interface FeedbackIndex {
  dst: number[];
  src: number[];
}

/** What a batch is checked against. */
export interface StepLimits {
  vocabSize: number;
  maxModelLen: number;
  blockSize: number;
  numBlocks: number;
}

/** Checks a batch (typed errors naming the field) and returns its token count. */
export function validateBatch(batch: readonly SequenceStep[], lim: StepLimits): number {
  if (!Array.isArray(batch) || batch.length === 0)
    throw new InvalidArgumentError('batch', 'a non-empty array of SequenceStep', batch);
  const bs = lim.blockSize;
  let tokens = 0;
  batch.forEach((s, i) => {
    const at = `batch[${i}]`;
    const fb = s?.feedback;
    if (fb !== undefined && (!Number.isInteger(fb) || fb < 0)) {
      throw new InvalidArgumentError(`${at}.feedback`, 'a row index >= 0', fb);
    }
    if (!Array.isArray(s?.tokens) || (s.tokens.length === 0 && fb === undefined))
      throw new InvalidArgumentError(`${at}.tokens`, 'a non-empty array of token ids', s?.tokens);
    s.tokens.forEach((id: number, j: number) => {
      if (!Number.isInteger(id) || id < 0 || id >= lim.vocabSize) {
        throw new InvalidArgumentError(
          `${at}.tokens[${j}]`,
          `a token id in [0, ${lim.vocabSize})`,
          id,
        );
      }
    });
    const count = stepTokenCount(s);
    if (
      !Number.isInteger(s.contextLength) ||
      s.contextLength < count ||
      s.contextLength > lim.maxModelLen
    ) {
      throw new InvalidArgumentError(
        `${at}.contextLength`,
        `an integer in [${count}, ${lim.maxModelLen}] (tokens .. maxModelLen)`,
        s.contextLength,
      );
    }
    const need = Math.ceil(s.contextLength / bs);
    if (!Array.isArray(s.blockTable) || s.blockTable.length < need) {
      throw new InvalidArgumentError(
        `${at}.blockTable`,
        `at least ${need} block ids (contextLength ${s.contextLength} / blockSize ${bs})`,
        s.blockTable?.length,
      );
    }
    for (let j = 0; j < need; j++) {
      const blk = s.blockTable[j];
      if (!Number.isInteger(blk) || blk! < 0 || blk! >= lim.numBlocks) {
        throw new InvalidArgumentError(
          `${at}.blockTable[${j}]`,
          `a block id in [0, ${lim.numBlocks})`,
          blk,
        );
      }
    }
    tokens += count;
  });
  return tokens;
}

/**
 * Writes the step's inputs into the workspace's current staging slot (the kernels read them after
 * `ws.upload`). With `padTo` > batch.length (a decode step replayed from the graph of a larger
 * batch bucket), rows past the batch become idle one-token sequences: token 0 at position 0 of
 * block 0, written to slot −1 (the KV write skips it); their outputs are never read. A fed-back
 * token is staged as 0 and listed in the result, for the copy that replaces it on the device.
 */
export function stageInputs(
  ws: Workspace,
  batch: readonly SequenceStep[],
  blockSize: number,
  padTo = batch.length,
): FeedbackIndex {
  const feedback: FeedbackIndex = { dst: [], src: [] };
  const ids = ws.stagingView('ids', Int32Array);
  const pos = ws.stagingView('positions', Int32Array);
  const slots = ws.stagingView('slots', BigInt64Array);
  const tables = ws.stagingView('blockTables', Int32Array);
  const seqLens = ws.stagingView('seqLens', Int32Array);
  const qsl = ws.stagingView('queryStartLoc', Int32Array);
  const last = ws.stagingView('lastIndex', Int32Array);
  const bs = blockSize;
  const mb = ws.shape.maxBlocksPerSeq;
  let t = 0;
  qsl[0] = 0;
  batch.forEach((s, b) => {
    const count = stepTokenCount(s);
    const start = s.contextLength - count;
    for (let j = 0; j < count; j++) {
      const p = start + j;
      if (j < s.tokens.length) {
        ids[t] = s.tokens[j]!;
      } else {
        ids[t] = 0;
        feedback.dst.push(t);
        feedback.src.push(s.feedback!);
      }
      pos[t] = p;
      slots[t] = BigInt(s.blockTable[Math.floor(p / bs)]! * bs + (p % bs));
      t++;
    }
    tables.fill(0, b * mb, (b + 1) * mb);
    for (let j = 0; j < Math.min(mb, s.blockTable.length); j++)
      tables[b * mb + j] = s.blockTable[j]!;
    seqLens[b] = s.contextLength;
    qsl[b + 1] = t;
    last[b] = t - 1;
  });
  for (let b = batch.length; b < padTo; b++) {
    ids[t] = 0;
    pos[t] = 0;
    slots[t] = -1n;
    tables.fill(0, b * mb, (b + 1) * mb);
    seqLens[b] = 1;
    t++;
    qsl[b + 1] = t;
    last[b] = t - 1;
  }
  return feedback;
}
