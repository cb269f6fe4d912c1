// Helpers of @x/engine's GPU checks (Node alone; bundle.mjs bundles each check into
// packages/engine/dist-gpu/, so paths resolve from there).
import { appendFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const DEV = process.env.X_TEST_DEVICE ?? 'cuda:0';
/** packages/engine/ (the bundles run from packages/engine/dist-gpu/). */
export const ENGINE = fileURLToPath(new URL('../', import.meta.url));
export const FIXTURES = `${ENGINE}fixtures`;
export const REFERENCE = `${ENGINE}test/gpu/reference.json`;
/** Logit tolerances, relative to max |logit| of the reference. */
export const TOL = { bf16: 3e-2, f16: 1e-2 };

/** A small Llama-shaped config with the 8B's head size (128) for checks on random weights. */
export const RANDOM_HD128 = {
  architecture: 'LlamaForCausalLM',
  hiddenSize: 512,
  intermediateSize: 1024,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 128,
  vocabSize: 1000,
  rmsNormEps: 1e-5,
  ropeTheta: 500000,
  ropeScaling: null,
  maxPositionEmbeddings: 1024,
  tieWordEmbeddings: false,
  attentionBias: false,
  qkNorm: false,
  dtype: 'bf16',
  bosTokenId: 1,
  eosTokenIds: [2],
};

/** max |got − want| / max |want|; Infinity when got holds a NaN. */
export function relErr(got, want) {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    err = Number.isNaN(d) ? Number.POSITIVE_INFINITY : Math.max(err, d);
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return err / scale;
}

export function argmax(v) {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/** Appends one result row to $OUT/engine-gpu.jsonl (when OUT is set). */
export function record(check, row) {
  const out = process.env.OUT;
  if (!out) return;
  mkdirSync(out, { recursive: true });
  appendFileSync(`${out}/engine-gpu.jsonl`, `${JSON.stringify({ check, ...row })}\n`);
}

/** True when two typed arrays hold the same bytes. */
export function sameBits(a, b) {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  );
}
