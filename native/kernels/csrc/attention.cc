// The paged KV cache: reshape_and_cache writes this step's keys/values into their slots, and
// paged_attention attends every query token of a mixed batch (prefill chunks and decode tokens)
// causally over its sequence's cached keys, walking the block table. Softmax is online (running
// max and sum per query head, rescaled once per cache block), all in f32.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"

namespace x::kernels {

Status reshape_and_cache(const ReshapeAndCacheParams& p) {
  const CacheLayout& c = p.cache;
  const int64_t total_slots = c.num_blocks * c.block_size, width = c.num_kv_heads * c.head_dim;
  for (int64_t t = 0; t < p.k.rows; t++) {
    int64_t s = p.slots[t];
    if (s < -1 || s >= total_slots) {
      return Status::Invalid("reshapeAndCache: slotMapping[" + std::to_string(t) + "] = " + std::to_string(s) +
                             " is outside [-1, " + std::to_string(total_slots) + ")");
    }
  }
  parallel_for(p.k.rows, std::max<int64_t>(1, 8192 / width), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      int64_t s = p.slots[t];
      if (s < 0) continue;  // padding token: nothing to store
      float* kd = reinterpret_cast<float*>(c.k_cache) + s * width;
      float* vd = reinterpret_cast<float*>(c.v_cache) + s * width;
      std::copy(p.k.row(t), p.k.row(t) + width, kd);
      std::copy(p.v.row(t), p.v.row(t) + width, vd);
    }
  });
  return Status::Ok();
}

namespace {
std::string at(const char* what, int64_t i) { return std::string(what) + "[" + std::to_string(i) + "]"; }
}  // namespace

Status paged_attention(const PagedAttentionParams& p) {
  const CacheLayout& c = p.cache;
  const int64_t tokens = p.q.rows, nk = c.num_kv_heads, hd = c.head_dim, bs = c.block_size;
  const int64_t group = p.num_heads / nk;
  // Validate the metadata once, before any thread reads the cache through it.
  if (p.query_start_loc[0] != 0 || p.query_start_loc[p.num_seqs] != tokens) {
    return Status::Invalid("pagedAttention: queryStartLoc must start at 0 and end at " + std::to_string(tokens) +
                           " (the number of query tokens)");
  }
  std::vector<int32_t> seq_of(static_cast<size_t>(tokens));
  for (int64_t b = 0; b < p.num_seqs; b++) {
    int64_t q0 = p.query_start_loc[b], q1 = p.query_start_loc[b + 1], len = p.seq_lens[b];
    if (q1 < q0) return Status::Invalid("pagedAttention: " + at("queryStartLoc", b + 1) + " < " + at("queryStartLoc", b));
    if (len < q1 - q0 || len > p.max_blocks * bs) {
      return Status::Invalid("pagedAttention: " + at("seqLens", b) + " = " + std::to_string(len) +
                             " must be in [query length " + std::to_string(q1 - q0) + ", " +
                             std::to_string(p.max_blocks * bs) + "] (blockTables width × blockSize)");
    }
    for (int64_t i = 0; i < (len + bs - 1) / bs; i++) {
      int32_t blk = p.block_tables[b * p.max_blocks + i];
      if (blk < 0 || blk >= c.num_blocks) {
        return Status::Invalid("pagedAttention: blockTables[" + std::to_string(b) + "][" + std::to_string(i) +
                               "] = " + std::to_string(blk) + " is outside [0, " + std::to_string(c.num_blocks) + ")");
      }
    }
    for (int64_t t = q0; t < q1; t++) seq_of[t] = static_cast<int32_t>(b);
  }

  const float* kc = reinterpret_cast<const float*>(c.k_cache);
  const float* vc = reinterpret_cast<const float*>(c.v_cache);
  const int64_t row = nk * hd;  // floats per cache slot
  parallel_for(tokens * nk, 1, [&](int64_t begin, int64_t end) {
    // Per query head of the group: running max, running sum, output accumulator, block scores.
    std::vector<float> acc(static_cast<size_t>(group * hd)), mx(group), sum(group), scores(group * bs);
    for (int64_t item = begin; item < end; item++) {
      const int64_t t = item / nk, g = item % nk, b = seq_of[t];
      const int64_t q0 = p.query_start_loc[b], qlen = p.query_start_loc[b + 1] - q0;
      const int64_t pos = p.seq_lens[b] - qlen + (t - q0);  // this token's position; keys [0, pos]
      const int32_t* table = p.block_tables + b * p.max_blocks;
      const float* qg = p.q.row(t) + g * group * hd;  // the group's query heads, hd apart
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(mx.begin(), mx.end(), -std::numeric_limits<float>::infinity());
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int64_t key0 = 0; key0 <= pos; key0 += bs) {
        const int64_t n = std::min(bs, pos + 1 - key0);
        const int64_t base = static_cast<int64_t>(table[key0 / bs]) * bs * row + g * hd;
        // The group's query heads share these keys (GQA): the block stays in L1 across them.
        for (int64_t r = 0; r < group; r++) {
          block_scores(qg + r * hd, kc + base, row, hd, n, p.scale, scores.data() + r * bs);
        }
        for (int64_t r = 0; r < group; r++) {
          float* s = scores.data() + r * bs;
          float bmax = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < n; j++) bmax = std::max(bmax, s[j]);
          float* a = acc.data() + r * hd;
          if (bmax > mx[r]) {
            float corr = std::exp(mx[r] - bmax);  // 0 on the first block (mx = -inf)
            sum[r] *= corr;
            for (int64_t d = 0; d < hd; d++) a[d] *= corr;
            mx[r] = bmax;
          }
          sum[r] += exp_shifted_sum(s, mx[r], n);  // s[j] becomes the weight of key j
        }
        for (int64_t r = 0; r < group; r++) {
          block_accumulate(acc.data() + r * hd, scores.data() + r * bs, vc + base, row, hd, n);
        }
      }
      for (int64_t r = 0; r < group; r++) {
        float* o = p.out.row(t) + (g * group + r) * hd;
        const float inv = 1.0f / sum[r];
        for (int64_t d = 0; d < hd; d++) o[d] = acc[r * hd + d] * inv;
      }
    }
  });
  return Status::Ok();
}

}  // namespace x::kernels
