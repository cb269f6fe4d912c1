import { type Stream, Tensor } from '@x/core';
import {
  embedding,
  FUSED_LINEAR_MAX_ROWS,
  fusedLinear,
  matmul,
  pagedAttention,
  rmsNorm,
  rotaryEmbedding,
  siluAndMul,
} from '@x/kernels';
import type { ModelConfig } from '../config.js';
import { WeightShapeError } from '../errors.js';
import { type ArchitectureSpec, layerWeightNames, type WeightSource } from './architecture.js';
import type { KvCache } from './kv-cache.js';
import type { Workspace } from './workspace.js';

interface Linear {
  w: Tensor;
  bias?: Tensor;
}

interface LayerWeights {
  inputNorm: Tensor;
  q: Linear;
  k: Linear;
  v: Linear;
  o: Linear;
  qNorm?: Tensor;
  kNorm?: Tensor;
  postNorm: Tensor;
  gate: Tensor;
  up: Tensor;
  down: Tensor;
  /** q/k/v as one [q + 2·kv, h] matmul, when the loader stored them back to back. */
  qkv?: Linear;
  /** gate/up as one [2·im, h] matmul, likewise. */
  gateUp?: Tensor;
}

/** Rows of this step: T tokens of B sequences (the workspace tensors cover the bucket). */
export interface ForwardShape {
  tokens: number;
  seqs: number;
}

/**
 * Per-runner scratch and kernel choices of a forward (CUDA; the CPU kernels ignore them). The
 * scratch is persistent memory shared by every step of a runner: CUDA graphs capture its address.
 */
export interface ForwardOptions {
  /** cuBLASLt's workspace (MATMUL_WORKSPACE_BYTES). */
  matmulWorkspace?: Tensor;
  /** Split-KV decode partials (pagedAttentionWorkspaceBytes). */
  attentionWorkspace?: Tensor;
  /** Split-KV arrival counters (i32 zeros; used for steps of up to numel / numHeads tokens). */
  attentionCounters?: Tensor;
  /** true: every sequence has one token (the split-KV decode kernel); default: the kernel decides. */
  decode?: boolean;
  /**
   * CUDA steps of at most FUSED_DECODE_MAX_TOKENS tokens run their linear layers as fusedLinear,
   * with RMSNorm, the residual adds, rotary + KV write and SiLU-and-mul inside them (5 kernels per
   * layer instead of 9–10). Default true; false: the separate ops (cuBLASLt), e.g. to compare.
   */
  fusedSmallBatch?: boolean;
}

/**
 * Steps of up to this many tokens run the fused small-batch layers. fusedLinear takes up to
 * FUSED_LINEAR_MAX_ROWS rows, but on an H200 only a single row beats cuBLASLt plus the separate
 * row kernels (docs/benchmarks/gpu-engine.md; docs/decisions/0009-fused-decode-linear.md).
 */
export const FUSED_DECODE_MAX_TOKENS = Math.min(1, FUSED_LINEAR_MAX_ROWS);

function checked(weights: WeightSource, name: string, shape: number[]): Tensor {
  const t = weights.get(name);
  if (t.rank !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new WeightShapeError(name, shape, t.shape);
  }
  return t;
}

/**
 * `parts` as one [Σ rows, cols] tensor when they lie back to back in memory (same dtype, device
 * and row width, contiguous) — how loadWeights stores q/k/v and gate/up — else undefined.
 */
function concatenated(parts: readonly Tensor[]): Tensor | undefined {
  const first = parts[0]!;
  let end = first.ptr;
  for (const t of parts) {
    const sameRows =
      t.rank === first.rank && t.shape.slice(1).every((d, i) => d === first.shape[i + 1]);
    if (!t.isContiguous || t.ptr !== end || t.dtype !== first.dtype || !sameRows) return undefined;
    if (t.device.name !== first.device.name) return undefined;
    end += BigInt(t.byteLength);
  }
  const rows = parts.reduce((a, t) => a + t.shape[0]!, 0);
  return new Tensor({
    ptr: first.ptr,
    dtype: first.dtype,
    shape: [rows, ...first.shape.slice(1)],
    device: first.device,
  });
}

/** The fused q/k/v projection, when weights (and biases, if any) are stored back to back. */
function fusedQkv(q: Linear, k: Linear, v: Linear): Linear | undefined {
  const w = concatenated([q.w, k.w, v.w]);
  if (w === undefined) return undefined;
  if (q.bias === undefined) return { w };
  const bias = concatenated([q.bias, k.bias!, v.bias!]);
  return bias === undefined ? undefined : { w, bias };
}

/**
 * The decoder forward shared by the registered architectures: embedding → layers [RMSNorm,
 * q/k/v (+bias), per-head q/k norm (Qwen3), rotary, KV write, paged attention, o_proj, fused
 * residual RMSNorm, gate/up, SiLU-and-mul, down] → final norm → lm_head on each sequence's last
 * token. Every kernel is enqueued on the one stream passed in; nothing here waits.
 */
export class DecoderModel {
  readonly config: ModelConfig;
  readonly spec: ArchitectureSpec;
  readonly #embed: Tensor;
  readonly #layers: LayerWeights[];
  readonly #finalNorm: Tensor;
  readonly #lmHead: Tensor;
  /** Whether the layers fit fusedLinear (q/k/v and gate/up stored fused, no q/k norm, widths of 8). */
  readonly #fusable: boolean;

  constructor(spec: ArchitectureSpec, config: ModelConfig, weights: WeightSource) {
    this.spec = spec;
    this.config = config;
    const {
      hiddenSize: h,
      numHeads: nq,
      numKvHeads: nk,
      headDim: hd,
      intermediateSize: im,
      vocabSize: v,
    } = config;
    this.#embed = checked(weights, 'model.embed_tokens.weight', [v, h]);
    this.#finalNorm = checked(weights, 'model.norm.weight', [h]);
    this.#lmHead = checked(weights, 'lm_head.weight', [v, h]);
    const qkvBias = spec.qkvBias(config);
    const oBias = spec.oBias(config);
    const qkNorm = spec.qkNorm(config);
    const linear = (name: string, out: number, inp: number, bias: boolean): Linear => ({
      w: checked(weights, `${name}.weight`, [out, inp]),
      ...(bias ? { bias: checked(weights, `${name}.bias`, [out]) } : {}),
    });
    this.#layers = Array.from({ length: config.numLayers }, (_, i) => {
      const n = layerWeightNames(i);
      const [q, k, v] = [
        linear(n.q, nq * hd, h, qkvBias),
        linear(n.k, nk * hd, h, qkvBias),
        linear(n.v, nk * hd, h, qkvBias),
      ] as const;
      const gate = checked(weights, n.gate, [im, h]);
      const up = checked(weights, n.up, [im, h]);
      // Qwen3's per-head q/k norm reshapes q and k, which needs them contiguous: no qkv fusion.
      const qkv = qkNorm ? undefined : fusedQkv(q, k, v);
      const gateUp = concatenated([gate, up]);
      return {
        inputNorm: checked(weights, n.inputNorm, [h]),
        q,
        k,
        v,
        ...(qkv ? { qkv } : {}),
        ...(gateUp ? { gateUp } : {}),
        o: linear(n.o, h, nq * hd, oBias),
        ...(qkNorm
          ? { qNorm: checked(weights, n.qNorm, [hd]), kNorm: checked(weights, n.kNorm, [hd]) }
          : {}),
        postNorm: checked(weights, n.postNorm, [h]),
        gate,
        up,
        down: checked(weights, n.down, [h, im]),
      };
    });
    this.#fusable =
      !qkNorm &&
      hd % 2 === 0 &&
      [h, im, nq * hd].every((d) => d % 8 === 0) &&
      this.#layers.every((l) => l.qkv !== undefined && l.gateUp !== undefined);
  }

  /** Whether a step of `tokens` tokens on `stream` runs the fused small-batch layers. */
  fusedFor(stream: Stream, tokens: number, options: ForwardOptions = {}): boolean {
    return (
      this.#fusable &&
      options.fusedSmallBatch !== false &&
      stream.device.kind === 'cuda' &&
      tokens >= 1 &&
      tokens <= FUSED_DECODE_MAX_TOKENS
    );
  }

  /** Element type of the weights, and so of the activations on CUDA. */
  get dtype(): Tensor['dtype'] {
    return this.#embed.dtype;
  }

  /**
   * Bytes of weights one decode step streams: every matrix and norm once, lm_head included (also
   * when it is tied to the embedding: the product reads the whole table), the embedding lookup
   * excluded (it gathers a few rows).
   */
  weightBytes(): number {
    const all: Tensor[] = [this.#finalNorm, this.#lmHead];
    for (const l of this.#layers) {
      all.push(l.inputNorm, l.postNorm, l.gate, l.up, l.down);
      for (const lin of [l.q, l.k, l.v, l.o]) all.push(lin.w, ...(lin.bias ? [lin.bias] : []));
      if (l.qNorm && l.kNorm) all.push(l.qNorm, l.kNorm);
    }
    return all.reduce((a, t) => a + t.byteLength, 0);
  }

  /**
   * Enqueues one forward pass. The workspace's staging tensors hold the step's inputs. Writes
   * logits of each sequence's last token to ws.logits rows [0, B); with `allLogits` ([T, V] f32 on
   * the stream's device), the logits of every token there too (tests, prompt logprobs).
   */
  forward(
    stream: Stream,
    ws: Workspace,
    kv: KvCache,
    cosSin: Tensor,
    shape: ForwardShape,
    allLogits?: Tensor,
    options: ForwardOptions = {},
  ): void {
    const c = this.config;
    const { tokens: t, seqs: b } = shape;
    const rows = (x: Tensor) => x.slice(0, 0, t);
    const hidden = rows(ws.hidden);
    const residual = rows(ws.residual);
    const normed = rows(ws.normed);
    const qW = c.numHeads * c.headDim;
    const kvW = c.numKvHeads * c.headDim;
    const qkvOut = rows(ws.qkv);
    // Fused layers write q|k|v side by side in one buffer; q, k, v are its column slices.
    const fused = {
      q: qkvOut.slice(1, 0, qW),
      k: qkvOut.slice(1, qW, qW + kvW),
      v: qkvOut.slice(1, qW + kvW, qW + 2 * kvW),
    };
    const separate = { q: rows(ws.q), k: rows(ws.k), v: rows(ws.v) };
    const attn = rows(ws.attn);
    const gateUp = rows(ws.gateUp);
    const act = rows(ws.act);
    const ids = ws.ids.slice(0, 0, t);
    const positions = ws.positions.slice(0, 0, t);
    const slots = ws.slots.slice(0, 0, t);
    const meta = {
      blockTables: ws.blockTables.slice(0, 0, b),
      seqLens: ws.seqLens.slice(0, 0, b),
      queryStartLoc: ws.queryStartLoc.slice(0, 0, b + 1),
      scale: 1 / Math.sqrt(c.headDim),
      ...(options.attentionWorkspace ? { workspace: options.attentionWorkspace } : {}),
      // Past the counters' capacity (a large mixed step) the combine kernel merges the splits.
      ...(options.attentionCounters && options.attentionCounters.numel >= t * c.numHeads
        ? { counters: options.attentionCounters }
        : {}),
      ...(options.decode === undefined ? {} : { decode: options.decode }),
      // Uploaded with the step's inputs; the kernels right before attention (qkv, or rotary and
      // the cache write) never write them, and write only this step's rows of the cache.
      hostMetadata: true,
      earlierKeysReady: true,
    };
    const mm = options.matmulWorkspace ? { workspace: options.matmulWorkspace } : {};
    const linear = (out: Tensor, x: Tensor, lin: Linear) =>
      matmul(stream, out, x, lin.w, lin.bias ? { ...mm, bias: lin.bias } : mm);
    const eps = c.rmsNormEps;
    const im = c.intermediateSize;
    const rope = { headDim: c.headDim, rotaryDim: c.headDim, neox: this.spec.neoxRotary };

    if (allLogits === undefined && this.fusedFor(stream, t, options)) {
      // FUSED_DECODE_MAX_TOKENS tokens at most: per layer qkv (input norm, rotary, KV write) →
      // attention → o (+= residual) → gate/up (post norm, SiLU-and-mul) → down (+= residual); the
      // residual stream is updated in place by the linear layers, lm_head normalizes its rows.
      embedding(stream, residual, this.#embed, ids);
      const c0 = {
        kind: 'rotaryKvCache' as const,
        positions,
        cosSinCache: cosSin,
        slotMapping: slots,
      };
      const heads = { headDim: c.headDim, numHeads: c.numHeads, numKvHeads: c.numKvHeads };
      const add = { epilogue: { kind: 'addToResidual' as const } };
      this.#layers.forEach((l, i) => {
        const qkv = l.qkv!;
        fusedLinear(stream, qkvOut, residual, qkv.w, {
          ...(qkv.bias ? { bias: qkv.bias } : {}),
          norm: { weight: l.inputNorm, eps },
          epilogue: {
            ...c0,
            ...heads,
            neox: this.spec.neoxRotary,
            kCache: kv.keys[i]!,
            vCache: kv.values[i]!,
          },
        });
        pagedAttention(stream, attn, fused.q, kv.keys[i]!, kv.values[i]!, meta);
        fusedLinear(stream, residual, attn, l.o.w, {
          ...(l.o.bias ? { bias: l.o.bias } : {}),
          ...add,
        });
        fusedLinear(stream, act, residual, l.gateUp!, {
          norm: { weight: l.postNorm, eps },
          epilogue: { kind: 'siluAndMul' },
        });
        fusedLinear(stream, residual, act, l.down, add);
      });
      let lastRows = residual.slice(0, 0, b);
      if (t !== b) {
        lastRows = ws.lastHidden.slice(0, 0, b);
        embedding(stream, lastRows, residual, ws.lastIndex.slice(0, 0, b));
      }
      fusedLinear(stream, ws.logits.slice(0, 0, b), lastRows, this.#lmHead, {
        norm: { weight: this.#finalNorm, eps },
      });
      return;
    }

    // The residual stream starts as the embeddings; each layer's input norm adds the previous
    // sublayer's output into it (vLLM's fused_add_rms_norm).
    embedding(stream, residual, this.#embed, ids);
    this.#layers.forEach((l, i) => {
      if (i === 0) rmsNorm(stream, normed, residual, l.inputNorm, { eps });
      else rmsNorm(stream, normed, hidden, l.inputNorm, { eps, residual });
      const { q, k, v } = l.qkv ? fused : separate;
      if (l.qkv) {
        linear(qkvOut, normed, l.qkv);
      } else {
        linear(q, normed, l.q);
        linear(k, normed, l.k);
        linear(v, normed, l.v);
      }
      if (l.qNorm && l.kNorm) {
        const qh = q.reshape([t * c.numHeads, c.headDim]);
        const kh = k.reshape([t * c.numKvHeads, c.headDim]);
        rmsNorm(stream, qh, qh, l.qNorm, { eps });
        rmsNorm(stream, kh, kh, l.kNorm, { eps });
      }
      // Rotary with the KV write fused in (one kernel on CUDA; rotary then the write on the CPU).
      const cache = { v, kCache: kv.keys[i]!, vCache: kv.values[i]!, slotMapping: slots };
      rotaryEmbedding(stream, positions, q, k, cosSin, { ...rope, cache });
      pagedAttention(stream, attn, q, kv.keys[i]!, kv.values[i]!, meta);
      linear(hidden, attn, l.o);
      rmsNorm(stream, normed, hidden, l.postNorm, { eps, residual });
      if (l.gateUp) {
        matmul(stream, gateUp, normed, l.gateUp, mm);
      } else {
        matmul(stream, gateUp.slice(1, 0, im), normed, l.gate, mm);
        matmul(stream, gateUp.slice(1, im, 2 * im), normed, l.up, mm);
      }
      siluAndMul(stream, act, gateUp);
      matmul(stream, hidden, act, l.down, mm);
    });
    rmsNorm(stream, normed, hidden, this.#finalNorm, { eps, residual });
    // Each sequence's last token into lm_head: when every sequence feeds one token (decode) that
    // is row b itself; else gather them (the embedding kernel is a row gather).
    let last = normed.slice(0, 0, b);
    if (t !== b) {
      last = ws.lastHidden.slice(0, 0, b);
      embedding(stream, last, normed, ws.lastIndex.slice(0, 0, b));
    }
    matmul(stream, ws.logits.slice(0, 0, b), last, this.#lmHead, mm);
    if (allLogits) matmul(stream, allLogits, normed, this.#lmHead, mm);
  }
}
