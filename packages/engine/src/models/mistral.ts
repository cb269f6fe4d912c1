import type { ArchitectureSpec } from './architecture.js';

/** Mistral: the Llama layout without biases (sliding window is not used by the supported checkpoints). */
export const mistral: ArchitectureSpec = {
  name: 'MistralForCausalLM',
  qkvBias: () => false,
  oBias: () => false,
  qkNorm: () => false,
  neoxRotary: true,
};
