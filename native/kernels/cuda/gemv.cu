// Small-batch linear layers (1..kGemvMaxRows rows of x: the decode step of a few sequences). At
// that size a linear layer is a stream over its weights, and a GEMM library's tiles waste most of
// their work; here each warp owns a pair of output rows (a "unit", see GemvMode in params.h) and
// streams both weight rows in 16-byte loads that bypass L1, every lane with 2·kUnroll loads in
// flight, f32 accumulation, one warp reduction per unit. The row-wise neighbours of the linear
// layer run inside it instead of as kernels of their own:
//   - prologue: RMSNorm of x, split at its scalar: each block stores x ⊙ (norm weight) into shared
//     memory (rounded to T) and each row's sum of squares, and the epilogue scales the dot
//     products by the row's 1 / rms. The FMAs then start after one barrier, not after a
//     block-wide sum and a second pass over x and the norm weight (that chain measured 1.5 µs a
//     call at one row on an H200). The result differs from rms_norm → matmul only in rounding:
//     the normalized row is not rounded to T before the product (ADR 0009);
//   - epilogue: bias, then store / add into the residual stream / SiLU-and-mul of a gate-up pair /
//     rotary on q and k heads with the paged KV write. Every output is rounded to T where the
//     unfused ops would store it, so the fused layer computes what rms_norm, matmul, rotary,
//     cache write and silu_and_mul compute one after the other (up to summation order and the
//     norm's rounding above).
// Launched with programmatic dependent launch on sm_90 (runtime.cc): a block starts while the
// previous kernel drains, loads the first weights of its first unit (no kernel writes weights),
// then waits for that kernel (grid_dep_wait) before reading anything else; the grid is persistent
// (at most the resident blocks, grid-stride over units), so the prologue runs once per block. Layers with fewer units than the GPU
// has resident warps split each unit's k range over `split` warps of a block (partials summed in
// shared memory), so every warp streams and each has a short chain of dependent loads.
#include "common.cuh"

namespace xk {
namespace {

constexpr int kWarps = 8;   // warps per block (256 threads); the host sizes the grid to match
constexpr int kUnroll = 4;  // 16-byte chunks per weight row and lane in flight

// The two weight rows of unit u (r1 < 0: the unit has one row, the last of an odd count).
__device__ __forceinline__ void unit_rows(const GemvArgs& a, int64_t u, int64_t& r0, int64_t& r1) {
  if (a.mode == kGemvSiluMul) {
    r0 = u;
    r1 = a.n + u;
  } else if (a.mode == kGemvRotary) {
    const int64_t half = a.head_dim / 2, head = u / half, i = u % half, base = head * a.head_dim;
    if (a.neox && head < a.num_heads + a.num_kv_heads) {
      r0 = base + i;
      r1 = base + i + half;
    } else {
      r0 = base + 2 * i;
      r1 = base + 2 * i + 1;
    }
  } else {
    r0 = 2 * u;
    r1 = 2 * u + 1 < a.n ? 2 * u + 1 : -1;
  }
}

template <typename T>
__device__ __forceinline__ void store_pair(T* row, int64_t r0, int64_t r1, float y0, float y1) {
  row[r0] = from_f<T>(y0);
  if (r1 >= 0) row[r1] = from_f<T>(y1);
}

// What the epilogue of one unit for row m of x reads besides its dot products and does not depend
// on another load: bias and the residual it adds to, kept as loaded (T) so that nothing waits for
// them before the weight loads. They load at the start of the unit's round and arrive while the
// weights stream; with split warps the whole block would otherwise wait for the residual's
// round trip between rounds (the barrier after the epilogue).
template <typename T>
struct EpilogueIn {
  T b0, b1, v0, v1;
};

template <typename T>
__device__ __forceinline__ EpilogueIn<T> epilogue_load(const GemvArgs& a, int m, int64_t r0, int64_t r1) {
  EpilogueIn<T> e;
  e.b0 = e.b1 = e.v0 = e.v1 = from_f<T>(0.0f);
  if (a.bias != 0) {
    const T* bias = reinterpret_cast<const T*>(a.bias);
    e.b0 = bias[r0];
    if (r1 >= 0) e.b1 = bias[r1];
  }
  if (a.mode == kGemvResidual) {
    const T* o = reinterpret_cast<const T*>(a.out) + m * a.ld_out;
    e.v0 = o[r0];
    if (r1 >= 0) e.v1 = o[r1];
  }
  return e;
}

// The epilogue of one unit for row m of x: d0, d1 are the dot products of weight rows r0, r1.
template <typename T>
__device__ void epilogue(const GemvArgs& a, int64_t u, int m, int64_t r0, int64_t r1, float d0, float d1,
                         const EpilogueIn<T>& e) {
  d0 += to_f(e.b0);
  d1 += to_f(e.b1);
  if (a.mode == kGemvStore) {
    if (a.out_f32) {
      float* o = reinterpret_cast<float*>(a.out) + m * a.ld_out;
      o[r0] = d0;
      if (r1 >= 0) o[r1] = d1;
    } else {
      store_pair<T>(reinterpret_cast<T*>(a.out) + m * a.ld_out, r0, r1, d0, d1);
    }
    return;
  }
  T* o = reinterpret_cast<T*>(a.out) + m * a.ld_out;
  if (a.mode == kGemvResidual) {
    // residual <- residual + y, y rounded as the linear layer would have stored it.
    o[r0] = from_f<T>(to_f(e.v0) + round_to<T>(d0));
    if (r1 >= 0) o[r1] = from_f<T>(to_f(e.v1) + round_to<T>(d1));
    return;
  }
  const float v0 = round_to<T>(d0), v1 = round_to<T>(d1);
  if (a.mode == kGemvSiluMul) {
    o[u] = from_f<T>(v0 / (1.0f + expf(-v0)) * v1);
    return;
  }
  // kGemvRotary: head of the pair, and whether it is a q, k or v head.
  const int64_t hd = a.head_dim, half = hd / 2, head = r0 / hd;
  const bool kv = head >= a.num_heads, rotated = head < a.num_heads + a.num_kv_heads;
  const int64_t pos = a.pos_i64 ? reinterpret_cast<const int64_t*>(a.positions)[m]
                                : reinterpret_cast<const int32_t*>(a.positions)[m];
  const bool pos_ok = pos >= 0 && pos < a.max_pos;
  if (!pos_ok && u == 0) report(a.err, kErrRotaryPosition, m, pos, a.max_pos);
  float y0 = v0, y1 = v1;
  if (rotated && pos_ok) {
    const float* cs = reinterpret_cast<const float*>(a.cos_sin) + pos * hd;
    const int64_t i = u % half;
    const float c = cs[i], s = cs[half + i];
    y0 = v0 * c - v1 * s;
    y1 = v1 * c + v0 * s;
  }
  const T t0 = from_f<T>(y0), t1 = from_f<T>(y1);
  o[r0] = t0;
  o[r1] = t1;
  if (!kv || !pos_ok) return;  // a token with a bad position is not cached (as rotary does)
  const int64_t slot = reinterpret_cast<const int64_t*>(a.slots)[m];
  if (slot < -1 || slot >= a.num_slots) {
    if (u == a.num_heads * half) report(a.err, kErrSlot, m, slot, a.num_slots);
    return;
  }
  if (slot < 0) return;  // padding token
  const int64_t width = a.num_kv_heads * hd;
  const int64_t col = (rotated ? head - a.num_heads : head - a.num_heads - a.num_kv_heads) * hd;
  T* cache = reinterpret_cast<T*>(rotated ? a.k_cache : a.v_cache) + slot * width + col;
  cache[r0 - head * hd] = t0;
  cache[r1 - head * hd] = t1;
}

template <typename T, bool NORM, int M>
__device__ void gemv_impl(const GemvArgs& a) {
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  __shared__ float norm_ss[M][kWarps];  // NORM: each warp's share of a row's sum of squares
  __shared__ float partial[kWarps][M][2];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // A block takes kWarps / split units per round; the split warps of a unit share its k range.
  const int split = a.split, per_round = kWarps / split, slot = warp / split, sub = warp % split;
  const int nchunk = static_cast<int>(a.k / 8);  // k < 2^31 (the host checks)
  const int span = (nchunk + split - 1) / split;
  const int lo = sub * span, hi = lo + span < nchunk ? lo + span : nchunk;
  const uint4* w = reinterpret_cast<const uint4*>(a.w);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * per_round;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * per_round;
  const uint64_t policy = evict_first_policy();

  // Launched with programmatic dependent launch: nothing an earlier kernel writes is read before
  // grid_dep_wait() returns, but the weights are no kernel's output: with preload bit 0 the first
  // iteration of this warp's first unit is loaded into registers before it, overlapping the
  // previous kernel's drain. (Letting the next kernel launch before the wait measured slower.)
  uint4 wa[kUnroll], wb[kUnroll];
  bool loaded = false;
  if ((a.preload & 1) && first + slot < a.units) {
    int64_t r0, r1;
    unit_rows(a, first + slot, r0, r1);
    const uint4* w0 = w + r0 * nchunk;
    const uint4* w1 = w + (r1 >= 0 ? r1 : r0) * nchunk;
#pragma unroll
    for (int j = 0; j < kUnroll; j++) {
      const int c = lo + lane + 32 * j;
      if (c < hi) {
        wa[j] = ld_stream(w0 + c, policy);
        wb[j] = ld_stream(w1 + c, policy);
      }
    }
    loaded = true;
  }
  if constexpr (NORM) {
    // The norm weight is no kernel's output either, and after a step's weight stream it is back in
    // HBM: into shared memory (where row 0 of x ⊙ weight goes) before the wait, no registers held.
    const uint4* nw = reinterpret_cast<const uint4*>(a.norm_w);
    for (int c = threadIdx.x; c < nchunk; c += blockDim.x) cp_async16(smem_u32(gemv_smem + 16 * c), nw + c, true);
    cp_async_commit();
  }
  grid_dep_wait();
  grid_dep_launch();

  const T* xs;
  int64_t ldx;
  if constexpr (NORM) {
    // x ⊙ norm weight into shared memory, over the weight's chunks this thread copied there (its
    // own cp.async, so no barrier before reading them); each warp's sum of squares of row m into
    // norm_ss[m] (row_scale turns them into 1 / rms after the barrier).
    T* s = reinterpret_cast<T*>(gemv_smem);
    cp_async_wait<0>();
    float ss[M];
#pragma unroll
    for (int m = 0; m < M; m++) ss[m] = 0.0f;
    for (int c = threadIdx.x; c < nchunk; c += blockDim.x) {
      float wv[8];
      unpack8<T>(reinterpret_cast<const uint4*>(s)[c], wv);
#pragma unroll
      for (int m = 0; m < M; m++) {
        float v[8];
        unpack8<T>(reinterpret_cast<const uint4*>(reinterpret_cast<const T*>(a.x) + m * a.ld_x)[c], v);
#pragma unroll
        for (int e = 0; e < 8; e++) {
          ss[m] = fmaf(v[e], v[e], ss[m]);
          v[e] *= wv[e];
        }
        reinterpret_cast<uint4*>(s + m * a.k)[c] = pack8<T>(v);
      }
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float t = warp_sum(ss[m]);
      if (lane == 0) norm_ss[m][warp] = t;
    }
    __syncthreads();
    xs = s;
    ldx = a.k;
  } else {
    xs = reinterpret_cast<const T*>(a.x);
    ldx = a.ld_x;
  }

  // NORM: row m's 1 / rms, the same bits in every thread (the warps' sums added in one order).
  // Recomputed in each epilogue (8 shared loads) instead of held across the loop: the one-row
  // kernels have no register to spare at 3 blocks per multiprocessor.
  auto row_scale = [&](int m) {
    float ss = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; w++) ss += norm_ss[m][w];
    return 1.0f / sqrtf(ss / static_cast<float>(a.k) + a.eps);
  };

  // Rounds are block-uniform (the split warps meet at a barrier); a warp past the last unit idles.
  for (int64_t base = first; base < a.units; base += stride) {
    const int64_t u = base + slot;
    const bool active = u < a.units;
    int64_t r0 = 0, r1 = -1;
    float acc0[M], acc1[M];
#pragma unroll
    for (int m = 0; m < M; m++) acc0[m] = acc1[m] = 0.0f;
    EpilogueIn<T> e;
    if (active) {
      unit_rows(a, u, r0, r1);
      // (The normed kernels load at the epilogue: holding the values across the loop spilled.)
      if constexpr (!NORM) {
        if ((a.preload & 2) == 0 && lane < M && sub == 0) e = epilogue_load<T>(a, lane, r0, r1);
      }
      const uint4* w0 = w + r0 * nchunk;
      const uint4* w1 = w + (r1 >= 0 ? r1 : r0) * nchunk;
      for (int c0 = lo; c0 < hi; c0 += 32 * kUnroll) {
        if (!loaded) {
#pragma unroll
          for (int j = 0; j < kUnroll; j++) {
            const int c = c0 + lane + 32 * j;
            if (c < hi) {
              wa[j] = ld_stream(w0 + c, policy);
              wb[j] = ld_stream(w1 + c, policy);
            }
          }
        }
        loaded = false;
#pragma unroll
        for (int j = 0; j < kUnroll; j++) {
          const int c = c0 + lane + 32 * j;
          if (c < hi) {
            float f0[8], f1[8];
            unpack8<T>(wa[j], f0);
            unpack8<T>(wb[j], f1);
#pragma unroll
            for (int m = 0; m < M; m++) {
              float xv[8];
              unpack8<T>(*reinterpret_cast<const uint4*>(xs + m * ldx + c * 8), xv);
#pragma unroll
              for (int e = 0; e < 8; e++) {
                acc0[m] = fmaf(f0[e], xv[e], acc0[m]);
                acc1[m] = fmaf(f1[e], xv[e], acc1[m]);
              }
            }
          }
        }
      }
    }
    float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float s0 = warp_sum(acc0[m]), s1 = warp_sum(acc1[m]);
      if (lane == m) {
        d0 = s0;
        d1 = s1;
      }
    }
    if (split == 1) {
      if (active && lane < M) {
        if (NORM || (a.preload & 2)) e = epilogue_load<T>(a, lane, r0, r1);
        if constexpr (NORM) {
          const float sc = row_scale(lane);
          d0 *= sc;
          d1 *= sc;
        }
        epilogue<T>(a, u, lane, r0, r1, d0, d1, e);
      }
      continue;
    }
    if (lane < M) {
      partial[warp][lane][0] = d0;
      partial[warp][lane][1] = d1;
    }
    __syncthreads();
    if (active && sub == 0 && lane < M) {
      for (int k = 1; k < split; k++) {
        d0 += partial[warp + k][lane][0];
        d1 += partial[warp + k][lane][1];
      }
      if (NORM || (a.preload & 2)) e = epilogue_load<T>(a, lane, r0, r1);
      if constexpr (NORM) {
        const float sc = row_scale(lane);
        d0 *= sc;
        d1 *= sc;
      }
      epilogue<T>(a, u, lane, r0, r1, d0, d1, e);
    }
    __syncthreads();  // partial is rewritten next round
  }
}

}  // namespace
}  // namespace xk

using xk::GemvArgs;

#define X_GEMV_KERNEL(SUF, T, NORM, M, TAG)                                      \
  extern "C" __global__ void __launch_bounds__(256, (M) == 1 ? 3 : 2) x_gemv_##SUF##_##TAG##M(GemvArgs a) { \
    xk::gemv_impl<T, NORM, M>(a);                                                \
  }
#define X_GEMV_KERNELS(SUF, T)                                                   \
  X_GEMV_KERNEL(SUF, T, false, 1, m) X_GEMV_KERNEL(SUF, T, false, 2, m)         \
  X_GEMV_KERNEL(SUF, T, false, 3, m) X_GEMV_KERNEL(SUF, T, false, 4, m)         \
  X_GEMV_KERNEL(SUF, T, true, 1, n) X_GEMV_KERNEL(SUF, T, true, 2, n)           \
  X_GEMV_KERNEL(SUF, T, true, 3, n) X_GEMV_KERNEL(SUF, T, true, 4, n)

X_GEMV_KERNELS(bf16, __nv_bfloat16)
X_GEMV_KERNELS(f16, __half)
