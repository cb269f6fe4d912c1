import type { ArchitectureSpec } from './architecture.js';

/** Qwen2 / Qwen2.5: q/k/v projections always carry a bias; o_proj never does. */
export const qwen2: ArchitectureSpec = {
  name: 'Qwen2ForCausalLM',
  qkvBias: () => true,
  oBias: () => false,
  qkNorm: () => false,
  neoxRotary: true,
};
