import type { Tensor } from '@x/core';
import type { ModelConfig } from '../config.js';

/**
 * What differs between decoder architectures that share the Llama layout (embedding → N × [norm,
 * attention, norm, gated MLP] → norm → lm_head). Adding an architecture is one file exporting one
 * of these plus a line in registry.ts; see docs/adding-a-model.md.
 */
export interface ArchitectureSpec {
  /** config.json `architectures[0]`. */
  readonly name: string;
  /** Whether q/k/v projections carry a bias. */
  qkvBias(config: ModelConfig): boolean;
  /** Whether o_proj carries a bias. */
  oBias(config: ModelConfig): boolean;
  /** Qwen3: RMSNorm over each head of q and k (weights [headDim]) before rotary. */
  qkNorm(config: ModelConfig): boolean;
  /** Rotary layout: true = rotate halves (HF `rotate_half`). */
  readonly neoxRotary: boolean;
}

/** The weights a decoder reads: HF names, already TP-sharded by the loader. */
export interface WeightSource {
  get(name: string): Tensor;
}

/** Hugging Face tensor names of layer `i` (shared by Llama, Mistral, Qwen2, Qwen3). */
export function layerWeightNames(i: number) {
  const p = `model.layers.${i}`;
  return {
    inputNorm: `${p}.input_layernorm.weight`,
    q: `${p}.self_attn.q_proj`,
    k: `${p}.self_attn.k_proj`,
    v: `${p}.self_attn.v_proj`,
    o: `${p}.self_attn.o_proj`,
    qNorm: `${p}.self_attn.q_norm.weight`,
    kNorm: `${p}.self_attn.k_norm.weight`,
    postNorm: `${p}.post_attention_layernorm.weight`,
    gate: `${p}.mlp.gate_proj.weight`,
    up: `${p}.mlp.up_proj.weight`,
    down: `${p}.mlp.down_proj.weight`,
  };
}
