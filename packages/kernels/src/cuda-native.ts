import { native } from './native.js';

/** A matrix as the CUDA binding reads it: rows of `cols` elements, `ld` elements apart. */
export interface GpuMat {
  ptr: bigint;
  rows: number;
  cols: number;
  ld: number;
}

type Params = Record<string, unknown>;

/** The CUDA functions of x_kernels.node (native/kernels/binding/cuda_binding.cc). Internal. */
export interface KernelsCudaNative {
  cudaEmbedding(stream: bigint, params: Params): void;
  cudaRmsNorm(stream: bigint, params: Params): void;
  cudaRotaryEmbedding(stream: bigint, params: Params): void;
  cudaSiluAndMul(stream: bigint, params: Params): void;
  cudaReshapeAndCache(stream: bigint, params: Params): void;
  cudaPagedAttention(stream: bigint, params: Params): void;
  cudaAttentionPlan(
    stream: null,
    params: Params,
  ): { kind: 'prefill' | 'decode' | 'generic'; splits: number; workspaceBytes: number };
  cudaMatmul(stream: bigint, params: Params): void;
  cudaSample(stream: bigint, params: Params): void;
  cudaIndexCopy(stream: bigint, params: Params): void;
  cudaCopyIndexed(stream: bigint, params: Params): void;
  cudaFusedLinear(stream: bigint, params: Params): void;
  cudaFetchErrors(stream: bigint): void;
  cudaReadErrors(device: number): string | undefined;
  cudaInfo(): {
    kernels: boolean;
    architectures: string;
    cublasLt: string;
    cublasLtAvailable: boolean;
  };
}

/** The addon with its CUDA surface. Internal. */
export function cudaNative(): KernelsCudaNative {
  return native() as unknown as KernelsCudaNative;
}

/** Kernel dtype codes (native/kernels/cuda/params.h DType). */
export const DTYPE_CODE = { f32: 0, f16: 1, bf16: 2 } as const;
