import { InvalidArgumentError } from '@x/core';
import type { Workspace } from './workspace.js';

/** One sequence of a step: a prefill chunk (several tokens) or a decode token. */
export interface SequenceStep {
  /** Token ids this step feeds (≥ 1). */
  tokens: readonly number[];
  /** The sequence's KV blocks in order; must cover `contextLength` tokens. */
  blockTable: readonly number[];
  /** Tokens of the sequence in the cache after this step, including `tokens`. */
  contextLength: number;
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
    if (!Array.isArray(s?.tokens) || s.tokens.length === 0)
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
    if (
      !Number.isInteger(s.contextLength) ||
      s.contextLength < s.tokens.length ||
      s.contextLength > lim.maxModelLen
    ) {
      throw new InvalidArgumentError(
        `${at}.contextLength`,
        `an integer in [${s.tokens.length}, ${lim.maxModelLen}] (tokens .. maxModelLen)`,
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
    tokens += s.tokens.length;
  });
  return tokens;
}

/**
 * Writes the step's inputs into the workspace's host staging (the device reads them when the
 * kernels run; on CUDA after `ws.upload`). With `padTo` > batch.length (a decode step replayed
 * from the graph of a larger batch bucket), rows past the batch become idle one-token sequences:
 * token 0 at position 0 of block 0, written to slot −1 (the KV write skips it); their outputs are
 * never read.
 */
export function stageInputs(
  ws: Workspace,
  batch: readonly SequenceStep[],
  blockSize: number,
  padTo = batch.length,
): void {
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
    const start = s.contextLength - s.tokens.length;
    s.tokens.forEach((id: number, j: number) => {
      const p = start + j;
      ids[t] = id;
      pos[t] = p;
      slots[t] = BigInt(s.blockTable[Math.floor(p / bs)]! * bs + (p % bs));
      t++;
    });
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
}
