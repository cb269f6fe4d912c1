/**
 * @x/kernels — the model kernels of x behind a device-agnostic API: every op takes the Stream it is
 * enqueued on, then Tensor descriptors, then options, and runs on that stream's device: the CPU
 * kernels (C++, multi-threaded, AVX2 where present) or the CUDA kernels (bf16/f16 activations, f32
 * accumulation, GEMM through cuBLASLt).
 */
export { CpuGraph } from './cpu-graph.js';
export {
  type AttentionWorkspaceOptions,
  pagedAttentionWorkspaceBytes,
} from './cuda-attention.js';
export { MATMUL_WORKSPACE_BYTES } from './cuda-matmul.js';
export { MAX_TOP_LOGPROBS_CUDA, sampleWorkspaceBytes } from './cuda-sample.js';
export { embedding } from './embedding.js';
export {
  FUSED_LINEAR_MAX_ROWS,
  type FusedLinearEpilogue,
  type FusedLinearOptions,
  fusedLinear,
} from './fused-linear.js';
export { type CopyIndexCopy, copyWithIndexCopy, indexCopy } from './index-copy.js';
export { checkKernelErrors, type GpuKernelInfo, gpuKernelInfo } from './kernel-errors.js';
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
export {
  type SampleOptions,
  type SampleOutputs,
  type SamplingRow,
  sample,
  sampleUniform,
} from './sample.js';
export { siluAndMul } from './silu-and-mul.js';
