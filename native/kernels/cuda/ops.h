// Host launchers of the CUDA kernels: pick the kernel variant (vectorized when rows and pointers
// are 16-byte aligned, tensor-core attention for head sizes 64 and 128), size the grid, enqueue on
// the caller's stream. Arguments arrive validated (shapes and ranges) from the binding.
#pragma once

#include <string>

#include "params.h"
#include "runtime.h"

namespace x::kernels::gpu {

Status launch_embedding(const DeviceRuntime& rt, cuda::CUstream s, int dtype, const xk::EmbeddingArgs& a);
Status launch_rms_norm(const DeviceRuntime& rt, cuda::CUstream s, int dtype, const xk::RmsNormArgs& a);
Status launch_rotary(const DeviceRuntime& rt, cuda::CUstream s, int dtype, const xk::RotaryArgs& a);
Status launch_silu_and_mul(const DeviceRuntime& rt, cuda::CUstream s, int dtype, const xk::SiluArgs& a);
Status launch_cache_write(const DeviceRuntime& rt, cuda::CUstream s, int dtype, const xk::CacheWriteArgs& a);
Status launch_index_copy(const DeviceRuntime& rt, cuda::CUstream s, const xk::IndexCopyArgs& a);
Status launch_copy_indexed(const DeviceRuntime& rt, cuda::CUstream s, const xk::CopyIndexedArgs& a);

// How paged attention will run for a batch (also what the workspace must hold).
struct AttnPlan {
  enum Kind { kPrefill, kDecode, kGeneric } kind = kGeneric;
  int splits = 1, split_len = 0;
  int min_split_keys = 256;      // decode: the shortest split of a token's keys
  uint64_t workspace_bytes = 0;  // needed for the partials (0 with one split)
};
// `max_ctx`: an upper bound of the sequence lengths (0: blockTables width × blockSize); `decode`: most sequences have one query token
// (-1: infer from tokens vs sequences); `workspace_bytes`: what the caller provides.
AttnPlan plan_attention(const DeviceRuntime& rt, const xk::AttnArgs& a, int64_t max_ctx, int decode,
                        uint64_t workspace_bytes, bool aligned);
Status launch_attention(const DeviceRuntime& rt, cuda::CUstream s, int dtype, xk::AttnArgs a, const AttnPlan& plan,
                        uint64_t workspace);

// The small-batch linear layer (x_gemv_*; GemvArgs in params.h): units, grid and prefetch are set
// here; the arguments' shapes arrive checked.
Status launch_gemv(const DeviceRuntime& rt, cuda::CUstream s, int dtype, xk::GemvArgs a);

// Bytes of the sampler's workspace for `rows` rows of `vocab` logits: per row V f32 + V u32, then
// the chunk statistics (kSampleChunk logits per chunk).
uint64_t sample_workspace_bytes(int64_t rows, int64_t vocab);
Status launch_sample(const DeviceRuntime& rt, cuda::CUstream s, const xk::SampleArgs& a);

// The message for an error word a kernel recorded ("" when none).
std::string describe_error(const xk::ErrorWord& e);

}  // namespace x::kernels::gpu
