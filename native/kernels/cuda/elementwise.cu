// Row-wise kernels: embedding gather, RMSNorm (with the fused residual add), rotary embedding (with
// the KV-cache write fused in), SiLU-and-mul and the paged KV write. All are memory-bound: 16-byte
// accesses where the row layout allows (the "_v" entry points; the host picks them when rows and
// pointers are 16-byte aligned), f32 math, one rounding to the storage type per stored value.
#include "common.cuh"

namespace xk {
namespace {

// Row counts up to which RMSNorm prefetches its weight (beyond, the weight stays in L2 anyway).
constexpr int64_t kPrefetchRows = 64;

template <typename T, bool VEC>
__device__ void embedding_impl(const EmbeddingArgs& a) {
  const int64_t t = blockIdx.x;
  T* out = reinterpret_cast<T*>(a.out) + t * a.ld_out;
  const int32_t id = reinterpret_cast<const int32_t*>(a.ids)[t];
  if (id < 0 || id >= a.vocab) {
    if (threadIdx.x == 0) report(a.err, kErrEmbeddingId, t, id, a.vocab);
    for (int64_t h = threadIdx.x; h < a.hidden; h += blockDim.x) out[h] = nan_of<T>();
    return;
  }
  const T* src = reinterpret_cast<const T*>(a.table) + static_cast<int64_t>(id) * a.ld_table;
  if constexpr (VEC) {
    const int64_t n = a.hidden / 8;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      reinterpret_cast<uint4*>(out)[i] = __ldg(reinterpret_cast<const uint4*>(src) + i);
    }
  } else {
    for (int64_t h = threadIdx.x; h < a.hidden; h += blockDim.x) out[h] = src[h];
  }
}

// One row per warp (WARP, rows of at most 1024 elements) or per block; each thread keeps its
// VPT vectors of 8 in registers between the sum of squares and the scaling.
template <typename T, int VPT, bool WARP>
__device__ void rms_norm_vec(const RmsNormArgs& a) {
  __shared__ float scratch[32];
  const int64_t row = WARP ? blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5) : blockIdx.x;
  const int tid = WARP ? (threadIdx.x & 31) : threadIdx.x;
  const int nthreads = WARP ? 32 : blockDim.x;
  if (WARP && row >= a.rows) return;  // whole warps leave; WARP mode has no block-wide barrier
  const int64_t nvec = a.cols / 8;
  const uint4* x = reinterpret_cast<const uint4*>(reinterpret_cast<const T*>(a.x) + row * a.ld_x);
  uint4* res = a.residual == 0 ? nullptr
                               : reinterpret_cast<uint4*>(reinterpret_cast<T*>(a.residual) + row * a.ld_res);
  if (a.rows <= kPrefetchRows) {
    // Few rows (a decode step): the weight is read after the row's reduction, from HBM; start
    // bringing it to L2 now, one 128-byte line per thread (a hint: nothing changes but latency).
    const char* wb = reinterpret_cast<const char*>(a.weight);
    for (int64_t line = tid; line * 128 < a.cols * 2; line += nthreads) prefetch_l2(wb + line * 128);
  }
  float v[VPT][8];
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < VPT; j++) {
    const int64_t i = tid + static_cast<int64_t>(j) * nthreads;
    if (i < nvec) {
      unpack8<T>(x[i], v[j]);
      if (res != nullptr) {
        // residual <- x + residual, rounded to T as stored; the norm reads the stored value.
        float r[8];
        unpack8<T>(res[i], r);
#pragma unroll
        for (int e = 0; e < 8; e++) v[j][e] = round_to<T>(v[j][e] + r[e]);
        res[i] = pack8<T>(v[j]);
      }
#pragma unroll
      for (int e = 0; e < 8; e++) ss += v[j][e] * v[j][e];
    }
  }
  ss = WARP ? warp_sum(ss) : block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(a.cols) + a.eps);
  const uint4* w = reinterpret_cast<const uint4*>(a.weight);
  uint4* out = reinterpret_cast<uint4*>(reinterpret_cast<T*>(a.out) + row * a.ld_out);
#pragma unroll
  for (int j = 0; j < VPT; j++) {
    const int64_t i = tid + static_cast<int64_t>(j) * nthreads;
    if (i < nvec) {
      float wv[8], y[8];
      unpack8<T>(__ldg(w + i), wv);
#pragma unroll
      for (int e = 0; e < 8; e++) y[e] = round_to<T>(v[j][e] * inv) * wv[e];
      out[i] = pack8<T>(y);
    }
  }
}

// Any width and alignment: two passes over the row (the second re-reads it from cache).
template <typename T>
__device__ void rms_norm_scalar(const RmsNormArgs& a) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* x = reinterpret_cast<const T*>(a.x) + row * a.ld_x;
  T* res = a.residual == 0 ? nullptr : reinterpret_cast<T*>(a.residual) + row * a.ld_res;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < a.cols; i += blockDim.x) {
    float s = to_f(x[i]);
    if (res != nullptr) {
      s = round_to<T>(s + to_f(res[i]));
      res[i] = from_f<T>(s);
    }
    ss += s * s;
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(a.cols) + a.eps);
  const T* w = reinterpret_cast<const T*>(a.weight);
  T* out = reinterpret_cast<T*>(a.out) + row * a.ld_out;
  for (int64_t i = threadIdx.x; i < a.cols; i += blockDim.x) {
    const float s = res != nullptr ? to_f(res[i]) : to_f(x[i]);  // this thread wrote res[i]
    out[i] = from_f<T>(round_to<T>(s * inv) * to_f(w[i]));
  }
}

template <typename T>
__device__ __forceinline__ int64_t load_position(const RotaryArgs& a, int64_t t) {
  return a.pos_i64 ? reinterpret_cast<const int64_t*>(a.positions)[t]
                   : reinterpret_cast<const int32_t*>(a.positions)[t];
}

// Rotates `heads` heads of one token; with `cache`, also stores the rotated heads there.
template <typename T, bool VEC>
__device__ void rotate_heads(const RotaryArgs& a, T* x, T* cache, int64_t heads, const float* cs) {
  const int64_t hd = a.head_dim, half = a.rot / 2;
  if constexpr (VEC) {
    const int64_t chunks = half / 8;
    for (int64_t item = threadIdx.x; item < heads * chunks; item += blockDim.x) {
      const int64_t h = item / chunks, i0 = (item % chunks) * 8;
      uint4* p1 = reinterpret_cast<uint4*>(x + h * hd + i0);
      uint4* p2 = reinterpret_cast<uint4*>(x + h * hd + half + i0);
      float x1[8], x2[8], c[8], s[8], y1[8], y2[8];
      unpack8<T>(*p1, x1);
      unpack8<T>(*p2, x2);
      const float4* cp = reinterpret_cast<const float4*>(cs + i0);
      const float4* sp = reinterpret_cast<const float4*>(cs + half + i0);
      *reinterpret_cast<float4*>(c) = __ldg(cp);
      *reinterpret_cast<float4*>(c + 4) = __ldg(cp + 1);
      *reinterpret_cast<float4*>(s) = __ldg(sp);
      *reinterpret_cast<float4*>(s + 4) = __ldg(sp + 1);
#pragma unroll
      for (int e = 0; e < 8; e++) {
        y1[e] = x1[e] * c[e] - x2[e] * s[e];
        y2[e] = x2[e] * c[e] + x1[e] * s[e];
      }
      const uint4 o1 = pack8<T>(y1), o2 = pack8<T>(y2);
      *p1 = o1;
      *p2 = o2;
      if (cache != nullptr) {
        *reinterpret_cast<uint4*>(cache + h * hd + i0) = o1;
        *reinterpret_cast<uint4*>(cache + h * hd + half + i0) = o2;
      }
    }
  } else {
    for (int64_t item = threadIdx.x; item < heads * half; item += blockDim.x) {
      const int64_t h = item / half, i = item % half;
      const int64_t j1 = a.neox ? i : 2 * i, j2 = a.neox ? i + half : 2 * i + 1;
      T* v = x + h * hd;
      const float x1 = to_f(v[j1]), x2 = to_f(v[j2]), c = cs[i], s = cs[half + i];
      const T y1 = from_f<T>(x1 * c - x2 * s), y2 = from_f<T>(x2 * c + x1 * s);
      v[j1] = y1;
      v[j2] = y2;
      if (cache != nullptr) {
        cache[h * hd + j1] = y1;
        cache[h * hd + j2] = y2;
      }
    }
  }
  // Dimensions past rotaryDim are not rotated but still belong in the cache.
  if (cache != nullptr && a.rot < hd) {
    const int64_t tail = hd - a.rot;
    for (int64_t item = threadIdx.x; item < heads * tail; item += blockDim.x) {
      const int64_t h = item / tail, d = a.rot + item % tail;
      cache[h * hd + d] = x[h * hd + d];
    }
  }
}

template <typename T, bool VEC>
__device__ void rotary_impl(const RotaryArgs& a) {
  const int64_t t = blockIdx.x;
  const int64_t pos = load_position<T>(a, t);
  if (pos < 0 || pos >= a.max_pos) {
    if (threadIdx.x == 0) report(a.err, kErrRotaryPosition, t, pos, a.max_pos);
    return;  // q and k of this token stay as they were; nothing is cached
  }
  int64_t slot = -1;
  if (a.k_cache != 0) {
    slot = reinterpret_cast<const int64_t*>(a.slots)[t];
    if (slot < -1 || slot >= a.num_slots) {
      if (threadIdx.x == 0) report(a.err, kErrSlot, t, slot, a.num_slots);
      slot = -1;
    }
  }
  const float* cs = reinterpret_cast<const float*>(a.cos_sin) + pos * a.rot;
  rotate_heads<T, VEC>(a, reinterpret_cast<T*>(a.q) + t * a.ld_q, nullptr, a.nq, cs);
  if (a.k == 0) return;
  const int64_t width = a.nk * a.head_dim;
  T* kc = slot < 0 ? nullptr : reinterpret_cast<T*>(a.k_cache) + slot * width;
  rotate_heads<T, VEC>(a, reinterpret_cast<T*>(a.k) + t * a.ld_k, kc, a.nk, cs);
  if (slot < 0) return;
  const T* v = reinterpret_cast<const T*>(a.v) + t * a.ld_v;
  T* vc = reinterpret_cast<T*>(a.v_cache) + slot * width;
  if constexpr (VEC) {
    for (int64_t i = threadIdx.x; i < width / 8; i += blockDim.x) {
      reinterpret_cast<uint4*>(vc)[i] = reinterpret_cast<const uint4*>(v)[i];
    }
  } else {
    for (int64_t i = threadIdx.x; i < width; i += blockDim.x) vc[i] = v[i];
  }
}

template <typename T, bool VEC>
__device__ void silu_impl(const SiluArgs& a) {
  const int64_t per_row = VEC ? a.cols / 8 : a.cols;
  const int64_t n = a.rows * per_row;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / per_row, c = idx % per_row;
    const T* g = reinterpret_cast<const T*>(a.x) + r * a.ld_x;
    T* o = reinterpret_cast<T*>(a.out) + r * a.ld_out;
    if constexpr (VEC) {
      float gv[8], uv[8], y[8];
      unpack8<T>(reinterpret_cast<const uint4*>(g)[c], gv);
      unpack8<T>(reinterpret_cast<const uint4*>(g + a.cols)[c], uv);
#pragma unroll
      for (int e = 0; e < 8; e++) y[e] = gv[e] / (1.0f + expf(-gv[e])) * uv[e];
      reinterpret_cast<uint4*>(o)[c] = pack8<T>(y);
    } else {
      const float gv = to_f(g[c]), uv = to_f(g[a.cols + c]);
      o[c] = from_f<T>(gv / (1.0f + expf(-gv)) * uv);
    }
  }
}

template <typename T, bool VEC>
__device__ void cache_write_impl(const CacheWriteArgs& a) {
  const int64_t t = blockIdx.x;
  const int64_t slot = reinterpret_cast<const int64_t*>(a.slots)[t];
  if (slot < -1 || slot >= a.num_slots) {
    if (threadIdx.x == 0) report(a.err, kErrSlot, t, slot, a.num_slots);
    return;
  }
  if (slot < 0) return;  // padding token
  const T* k = reinterpret_cast<const T*>(a.k) + t * a.ld_k;
  const T* v = reinterpret_cast<const T*>(a.v) + t * a.ld_v;
  T* kc = reinterpret_cast<T*>(a.k_cache) + slot * a.width;
  T* vc = reinterpret_cast<T*>(a.v_cache) + slot * a.width;
  if constexpr (VEC) {
    for (int64_t i = threadIdx.x; i < a.width / 8; i += blockDim.x) {
      reinterpret_cast<uint4*>(kc)[i] = reinterpret_cast<const uint4*>(k)[i];
      reinterpret_cast<uint4*>(vc)[i] = reinterpret_cast<const uint4*>(v)[i];
    }
  } else {
    for (int64_t i = threadIdx.x; i < a.width; i += blockDim.x) {
      kc[i] = k[i];
      vc[i] = v[i];
    }
  }
}

}  // namespace
}  // namespace xk

using xk::CacheWriteArgs;
using xk::IndexCopyArgs;

// dst[dst_index[k]] = src[src_index[k]], one thread per pair (one block of kIndexCopyMax threads).
extern "C" __global__ void x_index_copy_u32(IndexCopyArgs a) {
  const int k = threadIdx.x;
  if (k < a.n) {
    reinterpret_cast<uint32_t*>(a.dst)[a.dst_index[k]] = reinterpret_cast<const uint32_t*>(a.src)[a.src_index[k]];
  }
}
using xk::CopyIndexedArgs;

// The copy of CopyIndexedArgs, one word per thread (grid-stride); a word in [lo, hi] looks itself
// up in the sorted dst_word list (in the parameter bank) and takes its fed value when named.
extern "C" __global__ void x_copy_indexed_u32(const __grid_constant__ CopyIndexedArgs a) {
  const auto* src = reinterpret_cast<const uint32_t*>(a.src);
  const auto* feed = reinterpret_cast<const uint32_t*>(a.feed);
  auto* dst = reinterpret_cast<uint32_t*>(a.dst);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t w = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; w < a.words; w += stride) {
    int found = -1;
    if (a.n > 0 && w >= a.lo && w <= a.hi) {
      int l = 0, r = a.n - 1;
      while (l <= r) {
        const int m = (l + r) >> 1;
        const int64_t d = a.dst_word[m];
        if (d == w) {
          found = m;
          break;
        }
        if (d < w) l = m + 1;
        else r = m - 1;
      }
    }
    dst[w] = found >= 0 ? feed[a.src_index[found]] : src[w];
  }
}

using xk::EmbeddingArgs;
using xk::RmsNormArgs;
using xk::RotaryArgs;
using xk::SiluArgs;

#define X_ROW_KERNELS(SUF, T)                                                                        \
  extern "C" __global__ void x_embedding_##SUF##_v(EmbeddingArgs a) { xk::embedding_impl<T, true>(a); } \
  extern "C" __global__ void x_embedding_##SUF##_s(EmbeddingArgs a) { xk::embedding_impl<T, false>(a); } \
  extern "C" __global__ void x_rms_norm_##SUF##_w1(RmsNormArgs a) { xk::rms_norm_vec<T, 1, true>(a); }   \
  extern "C" __global__ void x_rms_norm_##SUF##_w2(RmsNormArgs a) { xk::rms_norm_vec<T, 2, true>(a); }   \
  extern "C" __global__ void x_rms_norm_##SUF##_w4(RmsNormArgs a) { xk::rms_norm_vec<T, 4, true>(a); }   \
  extern "C" __global__ void x_rms_norm_##SUF##_b4(RmsNormArgs a) { xk::rms_norm_vec<T, 4, false>(a); }  \
  extern "C" __global__ void x_rms_norm_##SUF##_b8(RmsNormArgs a) { xk::rms_norm_vec<T, 8, false>(a); }  \
  extern "C" __global__ void x_rms_norm_##SUF##_s(RmsNormArgs a) { xk::rms_norm_scalar<T>(a); }          \
  extern "C" __global__ void x_rotary_##SUF##_v(RotaryArgs a) { xk::rotary_impl<T, true>(a); }           \
  extern "C" __global__ void x_rotary_##SUF##_s(RotaryArgs a) { xk::rotary_impl<T, false>(a); }          \
  extern "C" __global__ void x_silu_and_mul_##SUF##_v(SiluArgs a) { xk::silu_impl<T, true>(a); }         \
  extern "C" __global__ void x_silu_and_mul_##SUF##_s(SiluArgs a) { xk::silu_impl<T, false>(a); }        \
  extern "C" __global__ void x_cache_write_##SUF##_v(CacheWriteArgs a) { xk::cache_write_impl<T, true>(a); } \
  extern "C" __global__ void x_cache_write_##SUF##_s(CacheWriteArgs a) { xk::cache_write_impl<T, false>(a); }

X_ROW_KERNELS(bf16, __nv_bfloat16)
X_ROW_KERNELS(f16, __half)
