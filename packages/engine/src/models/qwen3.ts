import type { ArchitectureSpec } from './architecture.js';

/**
 * Qwen3: per-head RMSNorm of q and k before rotary; head_dim independent of hidden_size (the
 * config's headDim is used everywhere); `attention_bias` adds q/k/v/o biases.
 */
export const qwen3: ArchitectureSpec = {
  name: 'Qwen3ForCausalLM',
  qkvBias: (c) => c.attentionBias,
  oBias: (c) => c.attentionBias,
  qkNorm: () => true,
  neoxRotary: true,
};
