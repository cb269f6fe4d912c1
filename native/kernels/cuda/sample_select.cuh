// Block-wide selection primitives of the sampling kernel (one block per row of logits).
//
// select_desc walks the row's kept elements in descending value order without sorting: a radix
// descent whose first digit is a linear bin of (ref - value) in 1/8 nats (ref is the row maximum),
// which spreads typical logits over many bins (few shared-memory atomic collisions), then the four
// bytes of the value's order-preserving key among the elements of the chosen bin. Weights are
// integers (counts, or probabilities in fixed point), so every sum is exact and the result does
// not depend on the order of atomics: replays and graph launches give identical draws.
#pragma once

#include "common.cuh"

namespace xk {

constexpr int kSampleThreads = 512;

struct SampleShared {
  unsigned long long hw[256];  // bin weights
  unsigned int hc[256];        // bin counts
  float fred[32];
  unsigned long long ured[32];
  int ired[32];
  int ibest[32];
  int sel_bin, sel_found, found_index;
  unsigned int sel_n;
  unsigned long long sel_above, sel_w;
  float found_value;
  int cand_n;
  int cand_id[64];
  float cand_v[64];
  alignas(8) uint32_t params[20];
};

// An order-preserving u32 key of a float (larger float -> larger key).
__device__ __forceinline__ uint32_t okey(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_okey(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
__device__ __forceinline__ int lin_bin(float ref, float v) {
  const float d = (ref - v) * 8.0f;
  return d < 255.0f ? (d > 0.0f ? static_cast<int>(d) : 0) : 255;
}

__device__ __forceinline__ unsigned long long block_sum_u64(unsigned long long v, SampleShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) sh.ured[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? sh.ured[lane] : 0ull;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ int block_sum_int(int v, SampleShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) sh.ired[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? sh.ired[lane] : 0;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Exclusive prefix sum of one int per thread, in thread order.
__device__ __forceinline__ int block_exclusive_scan(int v, SampleShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  __syncthreads();
  if (lane == 31) sh.ired[warp] = incl;
  __syncthreads();
  int before = 0;
  for (int w = 0; w < warp; w++) before += sh.ired[w];
  return before + incl - v;
}

// The result of select_desc. With W(x) = weight of kept elements whose value is > x, the selected
// value v satisfies W(v) < target <= W(v) + weight(v) (STRICT false: "the element where the
// running total reaches target") or W(v) <= target < W(v) + weight(v) (STRICT true).
struct Sel {
  float value;
  unsigned long long above, weight;
  unsigned int count;
  int index;  // the element's index when it is the only one with that value, else -1
  bool found;
};

// elem(i, float& v, unsigned long long& w) -> bool: whether element i is kept, its value and
// weight. An extra group (extra_n > 0 elements of value extra_v and total weight extra_w) joins the
// walk without being enumerated: how top-p's partly kept boundary group takes part in the draw.
template <bool STRICT, typename Elem>
__device__ Sel select_desc(SampleShared& sh, int n_elems, float ref, unsigned long long target, Elem elem,
                           float extra_v = 0.0f, unsigned long long extra_w = 0, unsigned int extra_n = 0) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  unsigned long long above = 0;
  int bin0 = 0;
  uint32_t prefix = 0;
  Sel res{0.0f, 0, 0, 0, -1, false};
  for (int level = 0; level < 5; level++) {
    const int shift = level == 0 ? 0 : 32 - 8 * level;
    const uint32_t hi_mask = level <= 1 ? 0u : (0xffffffffu << (shift + 8));
    auto bin_of = [&](float v, int* bin) -> bool {
      const int lb = lin_bin(ref, v);
      if (level == 0) {
        *bin = lb;
        return true;
      }
      if (lb != bin0) return false;
      const uint32_t k = okey(v);
      if ((k & hi_mask) != prefix) return false;
      *bin = static_cast<int>((k >> shift) & 255u);
      return true;
    };
    for (int i = tid; i < 256; i += blockDim.x) {
      sh.hw[i] = 0;
      sh.hc[i] = 0;
    }
    __syncthreads();
#pragma unroll 4
    for (int i = tid; i < n_elems; i += blockDim.x) {
      float v;
      unsigned long long w;
      int bin;
      if (!elem(i, v, w) || !bin_of(v, &bin)) continue;
      atomicAdd(&sh.hw[bin], w);
      atomicAdd(&sh.hc[bin], 1u);
    }
    if (tid == 0 && extra_n > 0) {
      int bin;
      if (bin_of(extra_v, &bin)) {
        atomicAdd(&sh.hw[bin], extra_w);
        atomicAdd(&sh.hc[bin], extra_n);
      }
    }
    __syncthreads();
    if (warp == 0) {
      auto bin_at = [&](int p) { return level == 0 ? p : 255 - p; };
      unsigned long long local = 0;
#pragma unroll
      for (int k = 0; k < 8; k++) local += sh.hw[bin_at(lane * 8 + k)];
      unsigned long long incl = local;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned long long y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
      }
      unsigned long long before = above + incl - local;
      int hit = -1;
#pragma unroll
      for (int k = 0; k < 8; k++) {
        const unsigned long long w = sh.hw[bin_at(lane * 8 + k)];
        const bool reach = STRICT ? before + w > target : before + w >= target;
        if (hit < 0 && reach) hit = k;
        if (hit < 0) before += w;
      }
      const unsigned mask = __ballot_sync(0xffffffffu, hit >= 0);
      if (mask == 0) {
        if (lane == 0) sh.sel_found = 0;
      } else if (lane == __ffs(mask) - 1) {
        const int bin = bin_at(lane * 8 + hit);
        sh.sel_found = 1;
        sh.sel_bin = bin;
        sh.sel_above = before;
        sh.sel_w = sh.hw[bin];
        sh.sel_n = sh.hc[bin];
      }
    }
    __syncthreads();
    if (!sh.sel_found) return res;
    const int bin = sh.sel_bin;
    above = sh.sel_above;
    res.above = above;
    res.weight = sh.sel_w;
    res.count = sh.sel_n;
    res.found = true;
    if (level == 0) bin0 = bin;
    else prefix |= static_cast<uint32_t>(bin) << shift;
    const bool last = level == 4;
    if (res.count == 1 && !last) {
      // One element left in the bin: find it instead of descending further.
      if (tid == 0) {
        sh.found_index = -1;
        sh.found_value = extra_v;  // if the one element is the extra group's
      }
      __syncthreads();
      const int next_bin0 = level == 0 ? bin : bin0;
      const uint32_t next_mask = level == 0 ? 0u : (0xffffffffu << shift);
      for (int i = tid; i < n_elems; i += blockDim.x) {
        float v;
        unsigned long long w;
        if (!elem(i, v, w) || lin_bin(ref, v) != next_bin0) continue;
        if (level > 0 && (okey(v) & next_mask) != prefix) continue;
        sh.found_index = i;
        sh.found_value = v;
      }
      __syncthreads();
      res.index = sh.found_index;
      res.value = sh.found_value;
      __syncthreads();  // found_* may be rewritten by the caller's next primitive
      return res;
    }
    if (last) res.value = from_okey(prefix);
    __syncthreads();  // sel_* are rewritten by the next level
  }
  return res;
}

// The index of the r-th (0-based, in index order) kept element whose value equals v, or -1.
template <typename Elem>
__device__ int nth_equal(SampleShared& sh, int n_elems, float v, unsigned int r, Elem elem) {
  const int chunk = (n_elems + blockDim.x - 1) / blockDim.x;
  const int begin = threadIdx.x * chunk, end = min(n_elems, begin + chunk);
  int cnt = 0;
  for (int i = begin; i < end; i++) {
    float x;
    unsigned long long w;
    if (elem(i, x, w) && x == v) cnt++;
  }
  if (threadIdx.x == 0) sh.found_index = -1;
  const int excl = block_exclusive_scan(cnt, sh);  // its barriers order the reset above
  if (static_cast<int>(r) >= excl && static_cast<int>(r) < excl + cnt) {
    int k = static_cast<int>(r) - excl;
    for (int i = begin; i < end; i++) {
      float x;
      unsigned long long w;
      if (elem(i, x, w) && x == v && k-- == 0) {
        sh.found_index = i;
        break;
      }
    }
  }
  __syncthreads();
  const int idx = sh.found_index;
  __syncthreads();
  return idx;
}

}  // namespace xk
