import type { ArchitectureSpec } from './architecture.js';

/** Llama 2/3/3.1/3.2 (`llama3` rope scaling comes from the config); `attention_bias` adds q/k/v/o biases. */
export const llama: ArchitectureSpec = {
  name: 'LlamaForCausalLM',
  qkvBias: (c) => c.attentionBias,
  oBias: (c) => c.attentionBias,
  qkNorm: () => false,
  neoxRotary: true,
};
