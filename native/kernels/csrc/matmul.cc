// out[M, N] = a[M, K] · w[N, K]ᵀ (+ bias), f32 accumulate, w f32 or bf16 (converted in the inner
// loop, never materialized). Threads split N (rows of w), so each weight byte is read by exactly one
// core: at decode (M = 1) this is a bandwidth-bound GEMV. Within a thread, a block of kBlockN weight
// rows stays in L2 while every 3-row strip of a passes over it in 3×4 register tiles.
#include <algorithm>

#include "kernels.h"
#include "simd.h"
#include "thread_pool.h"

namespace x::kernels {
namespace {
constexpr int64_t kTileM = 3, kTileN = 4, kBlockN = 64;
}

Status matmul(const MatmulParams& p) {
  const int64_t m = p.a.rows, k = p.a.cols, n = p.w.rows;
  const int64_t w_item = p.w.bf16 ? 2 : 4;
  const int64_t groups = (n + kTileN - 1) / kTileN;
  // Enough work per chunk that waking a thread pays off (~64K multiply-adds).
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, m * k * kTileN));
  parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
    const int64_t n_begin = g0 * kTileN, n_end = std::min(n, g1 * kTileN);
    for (int64_t nb = n_begin; nb < n_end; nb += kBlockN) {
      const int64_t nb_end = std::min(n_end, nb + kBlockN);
      for (int64_t i = 0; i < m; i += kTileM) {
        const int mr = static_cast<int>(std::min(kTileM, m - i));
        for (int64_t j = nb; j < nb_end; j += kTileN) {
          const int nr = static_cast<int>(std::min(kTileN, nb_end - j));
          const void* wj = reinterpret_cast<const void*>(p.w.ptr + j * p.w.ld * w_item);
          matmul_tile(p.a.row(i), p.a.ld, mr, wj, p.w.ld, p.w.bf16, nr, k, p.out.row(i) + j, p.out.ld);
        }
      }
    }
    if (p.bias != 0) {
      const void* bias = reinterpret_cast<const void*>(p.bias);
      for (int64_t i = 0; i < m; i++) {
        float* o = p.out.row(i);
        for (int64_t j = n_begin; j < n_end; j++) o[j] += load_weight(bias, p.bias_bf16, j);
      }
    }
  });
  return Status::Ok();
}

}  // namespace x::kernels
