// Sampling on the GPU with the CPU kernel's semantics (vLLM v1's order), one block per row:
//   0. (x_sample_stats, a kernel of its own: many blocks per row, so a 128k-logit row is read at
//      the GPU's bandwidth, not one multiprocessor's) each 2048-logit chunk's max, first index of
//      the max and Σ exp(x − max): the raw row's log-softmax statistics, and its greedy choice;
//   1. the processed row in the workspace:
//      suppressed ids -> -inf, logit_bias added, repetition / frequency / presence penalties;
//   2. greedy (temperature < 1e-5): the first maximum. Otherwise: / temperature, min-p, top-k
//      (keep values >= the k-th largest), top-p (in descending order, ties by id, keep tokens whose
//      preceding mass is < p of the total), then one draw u = sample_uniform(seed, step) taken in
//      that same order: the first token whose cumulative mass exceeds u · total.
// Probabilities are exp(v − max) in f32, summed as 2^-44 fixed point (exact, order-independent
// integer sums), so the draw is deterministic; it matches the CPU's double arithmetic except when
// u lands within ~1e-7 of a boundary. Only the sampled ids (and logprobs, if asked) are written.
#include <climits>

#include "sample_select.cuh"

namespace xk {
namespace {

constexpr float kFix = 17592186044416.0f;  // 2^44

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
__device__ __forceinline__ double sample_uniform(uint64_t seed, uint64_t step) {
  return static_cast<double>(splitmix64(splitmix64(seed) ^ step) >> 11) * 0x1.0p-53;
}

// (value, index) pairs: a beats b if larger, or equal with a smaller index.
__device__ __forceinline__ bool beats(float av, int ai, float bv, int bi) { return av > bv || (av == bv && ai < bi); }

// The warp's best (value, index) pair, in every lane.
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (beats(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
}

// (value, index) argmax over the block: the largest value, the smallest index among equals.
__device__ int block_argmax(float v, int i, SampleShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  warp_argmax(v, i);
  __syncthreads();
  if (lane == 0) {
    sh.fred[warp] = v;
    sh.ibest[warp] = i;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? sh.fred[lane] : -INFINITY;
    i = lane < static_cast<int>(blockDim.x >> 5) ? sh.ibest[lane] : INT_MAX;
    warp_argmax(v, i);
    if (lane == 0) sh.found_index = i;
  }
  __syncthreads();
  const int best = sh.found_index;
  __syncthreads();
  return best == INT_MAX ? 0 : best;
}

// Suppression, logit bias and penalties on the processed row (ids were validated by the caller).
__device__ void apply_modifications(const SampleRowParams& p, const SampleArgs& a, float* work,
                                    uint32_t* counts) {
  const int tid = threadIdx.x, nt = blockDim.x;
  const int32_t* ids = reinterpret_cast<const int32_t*>(a.ids);
  const float* bias = reinterpret_cast<const float*>(a.bias);
  for (int j = tid; j < p.suppress_n; j += nt) work[ids[p.suppress_off + j]] = -INFINITY;
  __syncthreads();
  for (int j = tid; j < p.bias_n; j += nt) work[ids[p.bias_off + j]] += bias[p.bias_off + j];
  __syncthreads();
  if (p.repetition == 1.0f && p.presence == 0.0f && p.frequency == 0.0f) return;
  const int32_t* prompt = ids + p.prompt_off;
  const int32_t* output = ids + p.output_off;
  for (int j = tid; j < p.prompt_n; j += nt) counts[prompt[j]] = 0;
  for (int j = tid; j < p.output_n; j += nt) counts[output[j]] = 0;
  __syncthreads();
  // Low 30 bits: occurrences in the output; bit 31: seen in the prompt; bit 30: already applied.
  for (int j = tid; j < p.output_n; j += nt) atomicAdd(&counts[output[j]], 1u);
  for (int j = tid; j < p.prompt_n; j += nt) atomicOr(&counts[prompt[j]], 0x80000000u);
  __syncthreads();
  for (int j = tid; j < p.prompt_n + p.output_n; j += nt) {
    const int id = j < p.prompt_n ? prompt[j] : output[j - p.prompt_n];
    const uint32_t old = atomicOr(&counts[id], 0x40000000u);
    if (old & 0x40000000u) continue;  // another thread owns this id
    const uint32_t c = old & 0x3fffffffu;
    float l = work[id];
    if (p.repetition != 1.0f) l = l > 0.0f ? l / p.repetition : l * p.repetition;
    if (c > 0) l -= p.frequency * static_cast<float>(c) + p.presence;
    work[id] = l;
  }
  __syncthreads();
}

constexpr int kStatThreads = 256, kStatPerThread = kSampleChunk / kStatThreads;

// Block (chunk c, row r): SampleChunkStats of logits [c·kSampleChunk, (c+1)·kSampleChunk) of row r.
// Every load is issued before any is used (8 per thread), then two passes over registers: the max
// with its first index, then the sum of exp relative to it.
template <typename TL>
__device__ void stats_impl(const SampleArgs& a) {
  __shared__ float s_v[kStatThreads / 32];
  __shared__ int s_i[kStatThreads / 32];
  __shared__ float s_sum[kStatThreads / 32];
  const int64_t row = blockIdx.y, c0 = static_cast<int64_t>(blockIdx.x) * kSampleChunk;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  grid_dep_launch();  // the sampler may start (it reads its parameters, then waits for these stats)
  const TL* raw = reinterpret_cast<const TL*>(a.logits) + row * a.ld;
  float x[kStatPerThread];
#pragma unroll
  for (int j = 0; j < kStatPerThread; j++) {
    const int64_t i = c0 + tid + j * kStatThreads;
    x[j] = i < a.vocab ? to_f(__ldg(raw + i)) : -INFINITY;
  }
  float m = -INFINITY;
  int mi = INT_MAX;
#pragma unroll
  for (int j = 0; j < kStatPerThread; j++) {
    if (x[j] > m) {  // ascending indices: the first of equals stays
      m = x[j];
      mi = static_cast<int>(c0) + tid + j * kStatThreads;
    }
  }
  warp_argmax(m, mi);
  if (lane == 0) {
    s_v[warp] = m;
    s_i[warp] = mi;
  }
  __syncthreads();
  m = s_v[0];
  mi = s_i[0];
#pragma unroll
  for (int w = 1; w < kStatThreads / 32; w++) {
    if (beats(s_v[w], s_i[w], m, mi)) {
      m = s_v[w];
      mi = s_i[w];
    }
  }
  // A NaN logit makes the sum NaN (with max -inf too: a chunk of NaN and -inf), as the CPU's lse.
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kStatPerThread; j++) {
    if (x[j] != -INFINITY) sum += expf(x[j] - m);
  }
  sum = warp_sum(sum);
  if (lane == 0) s_sum[warp] = sum;
  __syncthreads();
  if (tid == 0) {
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kStatThreads / 32; w++) total += s_sum[w];
    SampleChunkStats st;
    st.max = m;
    st.sum = total;
    st.index = m > -INFINITY ? mi : INT_MAX;
    st.pad = 0;
    reinterpret_cast<SampleChunkStats*>(a.stats)[row * a.chunks + blockIdx.x] = st;
  }
}

template <typename TL>
__device__ void sample_impl(const SampleArgs& a) {
  __shared__ SampleShared sh;
  const int row = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
  const int V = static_cast<int>(a.vocab);
  if (tid < 20) sh.params[tid] = reinterpret_cast<const uint32_t*>(a.params + static_cast<uint64_t>(row) * sizeof(SampleRowParams))[tid];
  __syncthreads();
  const SampleRowParams p = *reinterpret_cast<const SampleRowParams*>(sh.params);
  const TL* raw = reinterpret_cast<const TL*>(a.logits) + static_cast<int64_t>(row) * a.ld;
  float* work = reinterpret_cast<float*>(a.work) + static_cast<int64_t>(row) * V * 2;
  uint32_t* counts = reinterpret_cast<uint32_t*>(work + V);

  // 1. The raw row's max, first index of it and sum of exp, merged from its chunks' statistics
  // (x_sample_stats ran before this kernel; launched with programmatic dependent launch, this one
  // read its parameters while that ran). Rows without suppression, bias or penalties go straight
  // to greedy (argmax of the raw row) or to logits / temperature; the others are copied,
  // modified, then divided.
  const bool greedy = p.temperature < 1e-5f;
  const bool mods = p.suppress_n > 0 || p.bias_n > 0 || p.repetition != 1.0f || p.presence != 0.0f ||
                    p.frequency != 0.0f;
  grid_dep_wait();
  const SampleChunkStats* cs = reinterpret_cast<const SampleChunkStats*>(a.stats) + static_cast<int64_t>(row) * a.chunks;
  float rmax = -INFINITY, bv = -INFINITY;
  int bi = INT_MAX;
  for (int c = tid; c < a.chunks; c += nt) {
    const SampleChunkStats st = cs[c];
    rmax = fmaxf(rmax, st.max);
    if (beats(st.max, st.index, bv, bi)) {
      bv = st.max;
      bi = st.index;
    }
  }
  const float raw_max = block_max(rmax, sh.fred);
  float rsum = 0.0f;
  for (int c = tid; c < a.chunks; c += nt) {
    const SampleChunkStats st = cs[c];
    if (st.max > -INFINITY || st.sum != st.sum) rsum += st.sum * expf(st.max - raw_max);
  }
  const float raw_sum = block_sum(rsum, sh.fred);
  const double lse = static_cast<double>(raw_max) + log(static_cast<double>(raw_sum));
  float mx = -INFINITY;
  if (mods || !greedy) {
#pragma unroll 4
    for (int i = tid; i < V; i += nt) {
      const float x = to_f(__ldg(raw + i));
      if (mods) {
        work[i] = x;
      } else {
        const float v = x / p.temperature;
        work[i] = v;
        mx = fmaxf(mx, v);
      }
    }
  }
  if (mods) {
    bv = -INFINITY;
    bi = INT_MAX;
  }
  __syncthreads();
  if (mods) apply_modifications(p, a, work, counts);

  // 2. Choose.
  int token = 0;
  if (greedy) {
    if (mods) {
#pragma unroll 4
      for (int i = tid; i < V; i += nt) {
        const float v = work[i];
        if (v > bv) {
          bv = v;
          bi = i;
        }
      }
    }
    token = block_argmax(bv, bi, sh);
  } else {
    if (mods) {
#pragma unroll 4
      for (int i = tid; i < V; i += nt) {
        const float v = work[i] / p.temperature;
        work[i] = v;
        mx = fmaxf(mx, v);
      }
    }
    const float M = block_max(mx, sh.fred);  // its barriers publish the divided row
    const bool minp = p.min_p > 0.0f;
    const float cut = minp ? logf(p.min_p) : 0.0f;
    auto kept0 = [&](int i, float& v, unsigned long long& w) -> bool {
      v = work[i];
      w = 1;
      return v > -INFINITY && (!minp || !(v - M < cut));
    };
    float tau = -INFINITY;  // top-k threshold: values below are dropped (ties with it stay)
    if (p.top_k > 0 && p.top_k < V) {
      const Sel s = select_desc<false>(sh, V, M, static_cast<unsigned long long>(p.top_k), kept0);
      if (s.found) tau = s.value;
    }
    auto kept = [&](int i, float& v, unsigned long long& w) -> bool {
      v = work[i];
      if (!(v > -INFINITY) || (minp && v - M < cut) || v < tau) return false;
      w = __float2ull_rn(expf(v - M) * kFix);
      return true;
    };
    unsigned long long zl = 0;
#pragma unroll 4
    for (int i = tid; i < V; i += nt) {
      float v;
      unsigned long long w;
      if (kept(i, v, w)) zl += w;
    }
    const unsigned long long Z = block_sum_u64(zl, sh);
    if (Z == 0) {
      float bv = -INFINITY;
      int bi = INT_MAX;
      for (int i = tid; i < V; i += nt) {
        if (work[i] > bv) {
          bv = work[i];
          bi = i;
        }
      }
      token = block_argmax(bv, bi, sh);
    } else {
      // top-p: the boundary value v* and how many of its ties (smallest ids first) stay.
      bool cut_p = false;
      float vstar = 0.0f;
      unsigned long long w1 = 0, total = Z;
      unsigned int keep_n = 0;
      if (p.top_p < 1.0f) {
        const double pz = static_cast<double>(p.top_p) * static_cast<double>(Z);
        const unsigned long long target = static_cast<unsigned long long>(ceil(pz));
        const Sel s = select_desc<false>(sh, V, M, target, kept);
        if (s.found && target > s.above) {
          cut_p = true;
          vstar = s.value;
          w1 = s.weight / s.count;
          const unsigned long long need = (target - s.above + w1 - 1) / w1;
          keep_n = static_cast<unsigned int>(need < 1ull ? 1ull : (need > s.count ? s.count : need));
          total = s.above + keep_n * w1;
        }
      }
      const double u = sample_uniform(p.seed, p.step);
      unsigned long long t = static_cast<unsigned long long>(floor(u * static_cast<double>(total)));
      if (t >= total) t = total - 1;
      Sel d;
      if (cut_p) {
        auto above_vstar = [&](int i, float& v, unsigned long long& w) -> bool {
          return kept(i, v, w) && v > vstar;
        };
        d = select_desc<true>(sh, V, M, t, above_vstar, vstar, keep_n * w1, keep_n);
      } else {
        d = select_desc<true>(sh, V, M, t, kept);
      }
      if (d.index >= 0) {
        token = d.index;
      } else {
        const unsigned long long wd = d.weight / d.count;
        unsigned int r = wd > 0 ? static_cast<unsigned int>((t - d.above) / wd) : 0;
        if (r >= d.count) r = d.count - 1;
        const int idx = nth_equal(sh, V, d.value, r, kept);
        token = idx >= 0 ? idx : 0;
      }
    }
  }

  // 3. Outputs; log-probabilities from the raw logits.
  if (tid == 0) reinterpret_cast<int32_t*>(a.sampled)[row] = token;
  const float chosen = to_f(raw[token]);
  if (a.sampled_logprob != 0 && tid == 0) {
    reinterpret_cast<float*>(a.sampled_logprob)[row] = static_cast<float>(static_cast<double>(chosen) - lse);
  }
  if (a.sampled_rank != 0) {
    int c = 0;
#pragma unroll 4
    for (int i = tid; i < V; i += nt) c += to_f(__ldg(raw + i)) >= chosen ? 1 : 0;
    c = block_sum_int(c, sh);
    if (tid == 0) reinterpret_cast<int32_t*>(a.sampled_rank)[row] = c;
  }
  if (a.num_top > 0) {
    const int n = min(a.num_top, V);
    auto rawk = [&](int i, float& v, unsigned long long& w) -> bool {
      v = to_f(raw[i]);
      w = 1;
      return true;
    };
    const Sel s = select_desc<false>(sh, V, raw_max, static_cast<unsigned long long>(n), rawk);
    const float tau = s.value;
    if (tid == 0) sh.cand_n = 0;
    __syncthreads();
    for (int i = tid; i < V; i += nt) {
      const float v = to_f(raw[i]);
      if (v > tau) {
        const int k = atomicAdd(&sh.cand_n, 1);
        if (k < 64) {
          sh.cand_id[k] = i;
          sh.cand_v[k] = v;
        }
      }
    }
    __syncthreads();
    // Ties with the n-th value: the smallest ids first (as the CPU's stable order).
    const int above = sh.cand_n;
    const int need = n - above;
    const int chunk = (V + nt - 1) / nt, begin = tid * chunk, end = min(V, begin + chunk);
    int cnt = 0;
    for (int i = begin; i < end; i++) cnt += to_f(raw[i]) == tau ? 1 : 0;
    int rank = block_exclusive_scan(cnt, sh);
    for (int i = begin; i < end && rank < need; i++) {
      if (to_f(raw[i]) == tau) {
        sh.cand_id[above + rank] = i;
        sh.cand_v[above + rank] = tau;
        rank++;
      }
    }
    __syncthreads();
    if (tid == 0) {
      for (int x = 1; x < n; x++) {  // insertion sort: value descending, id ascending
        const int id = sh.cand_id[x];
        const float v = sh.cand_v[x];
        int y = x - 1;
        while (y >= 0 && (sh.cand_v[y] < v || (sh.cand_v[y] == v && sh.cand_id[y] > id))) {
          sh.cand_id[y + 1] = sh.cand_id[y];
          sh.cand_v[y + 1] = sh.cand_v[y];
          y--;
        }
        sh.cand_id[y + 1] = id;
        sh.cand_v[y + 1] = v;
      }
    }
    __syncthreads();
    int32_t* top_ids = reinterpret_cast<int32_t*>(a.top_ids) + static_cast<int64_t>(row) * a.num_top;
    float* top_lp = reinterpret_cast<float*>(a.top_logprobs) + static_cast<int64_t>(row) * a.num_top;
    for (int j = tid; j < a.num_top; j += nt) {
      top_ids[j] = j < n ? sh.cand_id[j] : -1;
      top_lp[j] = j < n ? static_cast<float>(static_cast<double>(sh.cand_v[j]) - lse) : -INFINITY;
    }
  }
}

}  // namespace
}  // namespace xk

using xk::SampleArgs;

extern "C" __global__ void __launch_bounds__(xk::kStatThreads) x_sample_stats_f32(SampleArgs a) {
  xk::stats_impl<float>(a);
}
extern "C" __global__ void __launch_bounds__(xk::kStatThreads) x_sample_stats_bf16(SampleArgs a) {
  xk::stats_impl<__nv_bfloat16>(a);
}
extern "C" __global__ void __launch_bounds__(xk::kStatThreads) x_sample_stats_f16(SampleArgs a) {
  xk::stats_impl<__half>(a);
}
extern "C" __global__ void __launch_bounds__(xk::kSampleThreads, 1) x_sample_f32(SampleArgs a) {
  xk::sample_impl<float>(a);
}
extern "C" __global__ void __launch_bounds__(xk::kSampleThreads, 1) x_sample_bf16(SampleArgs a) {
  xk::sample_impl<__nv_bfloat16>(a);
}
extern "C" __global__ void __launch_bounds__(xk::kSampleThreads, 1) x_sample_f16(SampleArgs a) {
  xk::sample_impl<__half>(a);
}
