/**
 * @x/kernels — the model kernels of x behind a device-agnostic API: every op takes the Stream it is
 * enqueued on, then Tensor descriptors, then options. This build has the CPU kernels (C++,
 * multi-threaded, AVX2 where present); CUDA versions come behind the same functions.
 */
export { CpuGraph } from './cpu-graph.js';
export { embedding } from './embedding.js';
export { type MatmulOptions, matmul } from './matmul.js';
export { cpuKernelInfo } from './native.js';
export { type PagedAttentionOptions, pagedAttention } from './paged-attention.js';
export { reshapeAndCache } from './reshape-and-cache.js';
export { type RmsNormOptions, rmsNorm } from './rms-norm.js';
export {
  type Llama3RopeScaling,
  type RopeCacheOptions,
  ropeCosSinCache,
  ropeInvFreq,
} from './rope-cache.js';
export { type RotaryEmbeddingOptions, rotaryEmbedding } from './rotary-embedding.js';
export { type SampleOutputs, type SamplingRow, sample, sampleUniform } from './sample.js';
export { siluAndMul } from './silu-and-mul.js';
