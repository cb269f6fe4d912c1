import type { ModelConfig } from './config.js';
import { architectureSpec } from './models/registry.js';

/** How a linear layer's weight is split across tensor-parallel ranks (Megatron style). */
export type ShardKind = 'column' | 'row' | 'replicated';

/** One tensor the model needs: its HF name, full shape, and how TP splits it. */
export interface WeightSpec {
  name: string;
  shape: number[];
  shard: ShardKind;
  /** For k/v projections: rows are KV heads, which are replicated when fewer than ranks. */
  kvHeads?: boolean;
  /**
   * Tensors with the same group are stored back to back in one allocation, in spec order, so
   * the model can run them as one matmul (q/k/v, their biases, gate/up). The group name is the
   * allocation's owner.
   */
  group?: string;
}

/**
 * Every tensor a supported architecture reads, with the shape its config implies. Column-parallel:
 * q/k/v/gate/up (and their biases) split on dim 0; row-parallel: o_proj/down_proj on dim 1.
 */
export function weightSpecs(config: ModelConfig): WeightSpec[] {
  const { hiddenSize: h, intermediateSize: inter, headDim: hd, vocabSize: v } = config;
  const q = config.numHeads * hd;
  const kv = config.numKvHeads * hd;
  const arch = architectureSpec(config.architecture);
  const specs: WeightSpec[] = [
    { name: 'model.embed_tokens.weight', shape: [v, h], shard: 'replicated' },
  ];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    const qkv = `${p}.self_attn.qkv_proj.weight`;
    const qkvBias = `${p}.self_attn.qkv_proj.bias`;
    const gateUp = `${p}.mlp.gate_up_proj.weight`;
    specs.push(
      { name: `${p}.input_layernorm.weight`, shape: [h], shard: 'replicated' },
      { name: `${p}.self_attn.q_proj.weight`, shape: [q, h], shard: 'column', group: qkv },
      {
        name: `${p}.self_attn.k_proj.weight`,
        shape: [kv, h],
        shard: 'column',
        kvHeads: true,
        group: qkv,
      },
      {
        name: `${p}.self_attn.v_proj.weight`,
        shape: [kv, h],
        shard: 'column',
        kvHeads: true,
        group: qkv,
      },
      { name: `${p}.self_attn.o_proj.weight`, shape: [h, q], shard: 'row' },
    );
    if (arch.qkvBias(config)) {
      specs.push(
        { name: `${p}.self_attn.q_proj.bias`, shape: [q], shard: 'column', group: qkvBias },
        {
          name: `${p}.self_attn.k_proj.bias`,
          shape: [kv],
          shard: 'column',
          kvHeads: true,
          group: qkvBias,
        },
        {
          name: `${p}.self_attn.v_proj.bias`,
          shape: [kv],
          shard: 'column',
          kvHeads: true,
          group: qkvBias,
        },
      );
    }
    // The bias of a row-parallel layer is added once, after the all-reduce, so every rank keeps
    // all of it.
    if (arch.oBias(config)) {
      specs.push({ name: `${p}.self_attn.o_proj.bias`, shape: [h], shard: 'replicated' });
    }
    if (arch.qkNorm(config)) {
      specs.push(
        { name: `${p}.self_attn.q_norm.weight`, shape: [hd], shard: 'replicated' },
        { name: `${p}.self_attn.k_norm.weight`, shape: [hd], shard: 'replicated' },
      );
    }
    specs.push(
      { name: `${p}.post_attention_layernorm.weight`, shape: [h], shard: 'replicated' },
      { name: `${p}.mlp.gate_proj.weight`, shape: [inter, h], shard: 'column', group: gateUp },
      { name: `${p}.mlp.up_proj.weight`, shape: [inter, h], shard: 'column', group: gateUp },
      { name: `${p}.mlp.down_proj.weight`, shape: [h, inter], shard: 'row' },
    );
  }
  specs.push({ name: 'model.norm.weight', shape: [h], shard: 'replicated' });
  if (!config.tieWordEmbeddings) {
    specs.push({ name: 'lm_head.weight', shape: [v, h], shard: 'replicated' });
  }
  return specs;
}

/** A tensor-parallel rank: which slice of each split tensor this process holds. */
export interface TensorParallel {
  rank: number;
  size: number;
}

/** The part of a spec's tensor one rank holds: rows [start, end) of dim `dim`. */
export interface ShardRange {
  dim: number;
  start: number;
  end: number;
  /** The shape this rank stores. */
  shape: number[];
}

/**
 * The slice of `spec` that `tp.rank` holds. KV heads fewer than ranks are replicated: rank r holds
 * KV head floor(r * numKvHeads / size), as vLLM does.
 */
export function shardRange(spec: WeightSpec, config: ModelConfig, tp: TensorParallel): ShardRange {
  const full = spec.shape;
  if (spec.shard === 'replicated' || tp.size === 1) {
    return { dim: 0, start: 0, end: full[0]!, shape: [...full] };
  }
  const dim = spec.shard === 'column' ? 0 : 1;
  const n = full[dim]!;
  let start: number;
  let len: number;
  if (spec.kvHeads && config.numKvHeads < tp.size) {
    const head = Math.floor((tp.rank * config.numKvHeads) / tp.size);
    start = head * config.headDim;
    len = config.headDim;
  } else {
    len = n / tp.size;
    start = tp.rank * len;
  }
  const shape = [...full];
  shape[dim] = len;
  return { dim, start, end: start + len, shape };
}
