// GEMM through cuBLASLt, opened at run time with dlopen (libcublasLt.so.13, .so.12; X_CUBLASLT
// overrides) and declared by hand: the few types, enums and entry points x uses, whose ABI is
// stable across CUDA 11-13. One handle per device; per shape (sizes, strides, dtypes, bias,
// pointer alignment, workspace size) the descriptors and the heuristic's algorithm are created
// once and cached. The caller provides the workspace (persistent memory, so graphs can use it).
#pragma once

#include <cstdint>
#include <string>

#include "x/cuda_driver.h"
#include "x/status.h"

namespace x::kernels::gpu {

// out[M, N] = a[M, K] · w[N, K]ᵀ (+ bias[N]), row-major with row strides (elements).
struct GemmArgs {
  int device = 0;
  uint64_t out = 0, a = 0, w = 0, bias = 0;  // bias 0: none; its dtype is the output's
  int64_t m = 0, n = 0, k = 0, ld_out = 0, ld_a = 0, ld_w = 0;
  int dtype_in = 0;   // xk::kBF16 or xk::kF16 (a and w)
  int dtype_out = 0;  // xk::kBF16, kF16 or kF32
  uint64_t workspace = 0, workspace_bytes = 0;
};

Status gemm(const GemmArgs& g, cuda::CUstream stream);

// "cuBLASLt <version> (<library>)", or why it cannot be used; `ok` says which.
std::string cublaslt_status(bool* ok);

}  // namespace x::kernels::gpu
