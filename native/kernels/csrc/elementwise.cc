// Row-wise kernels: embedding, RMSNorm (optionally with the residual add fused), rotary embedding,
// SiLU-and-mul. Each parallelizes over rows (tokens).
#include <cmath>
#include <string>

#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"

namespace x::kernels {
namespace {
// Rows per chunk so a chunk moves at least ~16K elements (thread wake-up costs microseconds).
int64_t grain_for(int64_t row_elems) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_elems)); }
}  // namespace

Status embedding(const EmbeddingParams& p) {
  const int64_t vocab = p.table.rows, hidden = p.out.cols;
  for (int64_t t = 0; t < p.out.rows; t++) {
    if (p.ids[t] < 0 || p.ids[t] >= vocab) {
      return Status::Invalid("embedding: ids[" + std::to_string(t) + "] = " + std::to_string(p.ids[t]) +
                             " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
  }
  parallel_for(p.out.rows, grain_for(hidden), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      float* o = p.out.row(t);
      int64_t id = p.ids[t];
      if (p.table.bf16) {
        const uint16_t* src = reinterpret_cast<const uint16_t*>(p.table.ptr) + id * p.table.ld;
        for (int64_t h = 0; h < hidden; h++) o[h] = bf16_to_f32(src[h]);
      } else {
        const float* src = p.table.row(id);
        for (int64_t h = 0; h < hidden; h++) o[h] = src[h];
      }
    }
  });
  return Status::Ok();
}

Status rms_norm(const RmsNormParams& p) {
  const int64_t n = p.x.cols;
  const void* w = reinterpret_cast<const void*>(p.weight);
  parallel_for(p.x.rows, grain_for(n), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      const float* x = p.x.row(t);
      float* o = p.out.row(t);
      double ss = 0;
      if (p.residual.ptr != 0) {
        // vLLM fused_add_rms_norm: residual <- x + residual; out <- rmsnorm(residual) * weight.
        float* r = p.residual.row(t);
        for (int64_t i = 0; i < n; i++) {
          float s = x[i] + r[i];
          r[i] = s;
          ss += static_cast<double>(s) * s;
        }
        x = r;
      } else {
        for (int64_t i = 0; i < n; i++) ss += static_cast<double>(x[i]) * x[i];
      }
      float inv = 1.0f / std::sqrt(static_cast<float>(ss / n) + p.eps);
      for (int64_t i = 0; i < n; i++) o[i] = (x[i] * inv) * load_weight(w, p.weight_bf16, i);
    }
  });
  return Status::Ok();
}

namespace {
void rotate_heads(float* x, int64_t heads, int64_t head_dim, int64_t rot, const float* cos, const float* sin,
                  bool neox) {
  const int64_t half = rot / 2;
  for (int64_t h = 0; h < heads; h++) {
    float* v = x + h * head_dim;
    if (neox) {
      for (int64_t i = 0; i < half; i++) {
        float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * cos[i] - x2 * sin[i];
        v[i + half] = x2 * cos[i] + x1 * sin[i];
      }
    } else {
      for (int64_t i = 0; i < half; i++) {
        float x1 = v[2 * i], x2 = v[2 * i + 1];
        v[2 * i] = x1 * cos[i] - x2 * sin[i];
        v[2 * i + 1] = x2 * cos[i] + x1 * sin[i];
      }
    }
  }
}
}  // namespace

Status rotary_embedding(const RotaryParams& p) {
  const int64_t tokens = p.q.rows;
  auto pos_of = [&](int64_t t) -> int64_t {
    return p.positions_i64 ? reinterpret_cast<const int64_t*>(p.positions)[t]
                           : reinterpret_cast<const int32_t*>(p.positions)[t];
  };
  for (int64_t t = 0; t < tokens; t++) {
    int64_t pos = pos_of(t);
    if (pos < 0 || pos >= p.max_pos) {
      return Status::Invalid("rotaryEmbedding: positions[" + std::to_string(t) + "] = " + std::to_string(pos) +
                             " is outside the cos/sin cache [0, " + std::to_string(p.max_pos) + ")");
    }
  }
  const int64_t nq = p.q.cols / p.head_dim, nk = p.k.ptr != 0 ? p.k.cols / p.head_dim : 0;
  parallel_for(tokens, grain_for(p.q.cols + p.k.cols), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      const float* cs = p.cos_sin + pos_of(t) * p.rotary_dim;
      const float* sn = cs + p.rotary_dim / 2;
      rotate_heads(p.q.row(t), nq, p.head_dim, p.rotary_dim, cs, sn, p.neox);
      if (nk > 0) rotate_heads(p.k.row(t), nk, p.head_dim, p.rotary_dim, cs, sn, p.neox);
    }
  });
  return Status::Ok();
}

Status silu_and_mul(const SiluAndMulParams& p) {
  const int64_t d = p.out.cols;
  parallel_for(p.out.rows, grain_for(d), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      const float* g = p.x.row(t);
      const float* u = g + d;
      float* o = p.out.row(t);
      for (int64_t i = 0; i < d; i++) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  });
  return Status::Ok();
}

}  // namespace x::kernels
