// The CPU kernels of @x/kernels as plain C++ (no Node-API): each takes a parameter struct already
// validated for shapes and dtypes by the binding, runs on the calling (stream) thread and fans out
// to the addon's thread pool. They return a Status for what only run time can see (an index out
// of range in device data); the binding turns a failed Status into a failed stream.
#pragma once

#include <cstdint>
#include <vector>

#include "x/status.h"

namespace x::kernels {

// A row-major matrix view: element (r, c) at ptr + (r*ld + c) * itemsize.
struct Mat {
  uint64_t ptr = 0;
  int64_t rows = 0, cols = 0, ld = 0;
  bool bf16 = false;  // weights only: bf16 instead of f32

  float* f32() const { return reinterpret_cast<float*>(ptr); }
  float* row(int64_t r) const { return reinterpret_cast<float*>(ptr) + r * ld; }
};

struct EmbeddingParams {
  Mat out, table;
  const int32_t* ids = nullptr;
};
Status embedding(const EmbeddingParams& p);

struct RmsNormParams {
  Mat out, x, residual;  // residual.ptr == 0: none
  uint64_t weight = 0;
  bool weight_bf16 = false;
  float eps = 1e-6f;
};
Status rms_norm(const RmsNormParams& p);

struct RotaryParams {
  uint64_t positions = 0;
  bool positions_i64 = false;
  Mat q, k;  // k.ptr == 0: none
  const float* cos_sin = nullptr;  // [max_pos, rotary_dim]: cos in the first half, sin in the second
  int64_t max_pos = 0, head_dim = 0, rotary_dim = 0;
  bool neox = true;
};
Status rotary_embedding(const RotaryParams& p);

struct SiluAndMulParams {
  Mat out, x;
};
Status silu_and_mul(const SiluAndMulParams& p);

struct MatmulParams {
  Mat out, a, w;
  uint64_t bias = 0;  // 0: none
  bool bias_bf16 = false;
};
Status matmul(const MatmulParams& p);

struct CacheLayout {
  uint64_t k_cache = 0, v_cache = 0;  // [num_blocks, block_size, num_kv_heads, head_dim] f32
  int64_t num_blocks = 0, block_size = 0, num_kv_heads = 0, head_dim = 0;
};

struct ReshapeAndCacheParams {
  Mat k, v;  // [T, num_kv_heads * head_dim]
  CacheLayout cache;
  const int64_t* slots = nullptr;  // [T]; -1 skips the token
};
Status reshape_and_cache(const ReshapeAndCacheParams& p);

struct PagedAttentionParams {
  Mat out, q;  // [T, num_heads * head_dim]
  CacheLayout cache;
  int64_t num_heads = 0, num_seqs = 0, max_blocks = 0;
  const int32_t* block_tables = nullptr;     // [num_seqs, max_blocks]
  const int32_t* seq_lens = nullptr;         // [num_seqs]
  const int32_t* query_start_loc = nullptr;  // [num_seqs + 1]
  float scale = 1.0f;
};
Status paged_attention(const PagedAttentionParams& p);

// One row of a sampling batch (vLLM SamplingParams semantics; see sampling.cc for the order).
struct SampleRow {
  float temperature = 1.0f;  // < 1e-5: greedy
  int64_t top_k = 0;         // <= 0 or >= vocab: off
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  uint64_t step = 0;  // mixed into the seed so each step of a request draws a fresh number
  float repetition_penalty = 1.0f, presence_penalty = 0.0f, frequency_penalty = 0.0f;
  std::vector<int32_t> prompt_ids, output_ids;
  std::vector<int32_t> bias_ids;
  std::vector<float> bias_values;
  std::vector<int32_t> suppress_ids;  // set to -inf (min_tokens hides stop tokens this way)
};

struct SampleParams {
  Mat logits;  // [B, V] f32, read only
  std::vector<SampleRow> rows;
  int32_t* sampled = nullptr;          // [B]
  float* sampled_logprob = nullptr;    // [B] or null
  int32_t* sampled_rank = nullptr;     // [B] or null
  int64_t num_top = 0;                 // top-N logprobs per row
  int32_t* top_ids = nullptr;          // [B, num_top] or null
  float* top_logprobs = nullptr;       // [B, num_top] or null
};
Status sample(const SampleParams& p);

// The uniform number in [0, 1) that row (seed, step) draws (exposed for tests and docs).
double sample_uniform(uint64_t seed, uint64_t step);

}  // namespace x::kernels
