// A probe for issue 6's next step, outside the engine: does a chain of one-row linear layers run
// faster as one persistent kernel (a grid barrier between ops) than as one kernel per op chained
// with programmatic dependent launch, as @x/kernels' fusedLinear runs them today?
//
// Four layers of Llama-3.1-8B's linear shapes (qkv 6144×4096, o 4096×4096, gate_up 28672×4096,
// down 4096×14336; 16 ops, distinct random bf16 weights, 1.75 GB), one row of x, the loop of
// native/kernels/cuda/gemv.cu (units of two weight rows, 4 chunks of 16 bytes per lane and row in
// flight, split-K over the warps of a block for narrow layers, 3 blocks of 256 threads per SM),
// store epilogue only. Op i+1 reads op i's output (the first k values of its buffer). Variants:
//   pdl      one kernel per op; each block loads its first weights, then griddepcontrol.wait
//   chain    one kernel, a grid barrier between ops; each warp loads the next op's first weights
//            into registers once it has finished the current op, then arrives at the barrier
//   early    as chain, but a warp asks for the next op's first weights (cp.async into its own
//            4 KB of shared memory) right after it has issued the loads of its last iteration
//            of the current op, so HBM never waits for the barrier
//   mlp      as pdl, but each layer's gate_up and down are one kernel (split-K over the inner
//            rows, down's weights stored transposed) and a reduce kernel (see mlp_kernel)
// Build and run on the GPU machine (-DDOWN_UNROLL=5, -DWARPS=4, -DMLP_NO_REDUCE=1: the variants
// described there):
//   nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/probe tools/persistent-probe/probe.cu && /tmp/probe
// It prints the median replay time of each variant's CUDA graph and the check that pdl, chain and
// early computed the same outputs (bit for bit: the same sums in the same order), and mlp's layer-0
// outputs against pdl's (another summation order: within 1% of the largest value).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

// The kernels' own helpers (unpack8, warp_sum, grid_dep_*, smem_u32, cp_async16, ...).
#include "../../native/kernels/cuda/common.cuh"

// A failed CUDA call throws; main reports it and returns 1.
#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + " " + #x + \
                               ": " + cudaGetErrorString(e_));                                  \
    }                                                                                           \
  } while (0)

namespace {

using xk::cp_async16;
using xk::ld_stream;
using xk::cp_async_commit;
using xk::grid_dep_launch;
using xk::grid_dep_wait;
using xk::smem_u32;
using xk::unpack8;
using xk::warp_sum;

// -DWARPS=4: blocks of 4 warps (6 per SM) instead of 8 (3 per SM), the same warps per SM.
#ifndef WARPS
#define WARPS 8
#endif
constexpr int kWarps = WARPS, kUnroll = 4, kMaxOps = 16;
constexpr int kThreads = 32 * kWarps;
constexpr int kXsBytes = 14336 * 2;  // the widest x
#ifndef DOWN_UNROLL
#define DOWN_UNROLL 4
#endif
// -DDOWN_UNROLL=5 or 7 adds a variant "pdl-dU": the down ops (k = 14336, split 4: 448 chunks per
// warp, 3.5 iterations of 4 chunks a lane) loop over 5 or 7 chunks a lane (3 or 2 iterations).
constexpr int kDownUnroll = DOWN_UNROLL;

struct Op {
  const uint4* w;
  const __nv_bfloat16* x;
  __nv_bfloat16* y;
  int n, k, units, split;
};
struct Chain {
  Op ops[kMaxOps];
  int count;
  unsigned* bar;  // [arrivals, exits], zero between launches
};

// Where a warp works in an op: the units of its rounds and its k range.
struct Place {
  int per_round, slot, sub, lo, hi, first, stride;
};
__device__ __forceinline__ Place place(const Op& op) {
  const int warp = threadIdx.x >> 5;
  Place p;
  p.per_round = kWarps / op.split;
  p.slot = warp / op.split;
  p.sub = warp % op.split;
  const int nchunk = op.k / 8, span = (nchunk + op.split - 1) / op.split;
  p.lo = p.sub * span;
  p.hi = min(p.lo + span, nchunk);
  p.first = blockIdx.x * p.per_round;
  p.stride = gridDim.x * p.per_round;
  return p;
}

// Calls load(j, w0 + c, w1 + c) for the chunks of the first iteration of this warp's first unit of
// op (what every variant loads before the wait); false when the warp has no unit.
template <int U, typename Load>
__device__ __forceinline__ bool first_iteration(const Op& op, Load load) {
  const Place p = place(op);
  const int lane = threadIdx.x & 31;
  if (p.first + p.slot >= op.units) return false;
  const int nchunk = op.k / 8, u = p.first + p.slot;
  const uint4* w0 = op.w + static_cast<int64_t>(2 * u) * nchunk;
  const uint4* w1 = w0 + nchunk;
#pragma unroll
  for (int j = 0; j < U; j++) {
    const int c = p.lo + lane + 32 * j;
    if (c < p.hi) load(j, w0 + c, w1 + c);
  }
  return true;
}
// Into registers.
template <int U = kUnroll>
__device__ __forceinline__ bool preload(const Op& op, uint4 (&wa)[U], uint4 (&wb)[U], uint64_t pol) {
  return first_iteration<U>(op, [&](int j, const uint4* a, const uint4* b) {
    wa[j] = ld_stream(a, pol);
    wb[j] = ld_stream(b, pol);
  });
}
// As cp.async into this warp's 4 KB of shared memory (variant early).
__device__ __forceinline__ void preload_smem(const Op& op, uint4* buf) {
  const int lane = threadIdx.x & 31;
  first_iteration<kUnroll>(op, [&](int j, const uint4* a, const uint4* b) {
    cp_async16(smem_u32(buf + j * 32 + lane), a, true);
    cp_async16(smem_u32(buf + (kUnroll + j) * 32 + lane), b, true);
  });
  cp_async_commit();
}

// One op: gemv.cu's rounds (M = 1, store). `loaded`: wa/wb hold the first iteration already.
// With next != nullptr (variant early), the warp issues next's first weights into buf right after
// the loads of its last iteration of this op.
template <int U = kUnroll>
__device__ void run_op(const Op& op, uint4 (&wa)[U], uint4 (&wb)[U], bool loaded, uint64_t pol,
                       float (*partial)[2], const Op* next, uint4* buf, uint4* xs) {
  const Place p = place(op);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nchunk = op.k / 8;
  // x into shared memory (through L2: op.x was written by other blocks), as the normed kernels do.
  for (int c = threadIdx.x; c < nchunk; c += blockDim.x) xs[c] = __ldcg(reinterpret_cast<const uint4*>(op.x) + c);
  __syncthreads();
  bool next_issued = next == nullptr;
  for (int base = p.first; base < op.units; base += p.stride) {
    const int u = base + p.slot;
    const bool active = u < op.units;
    const bool last_round = base + p.stride >= op.units;
    float acc0 = 0.0f, acc1 = 0.0f;
    if (active) {
      const uint4* w0 = op.w + static_cast<int64_t>(2 * u) * nchunk;
      const uint4* w1 = w0 + nchunk;
      for (int c0 = p.lo; c0 < p.hi; c0 += 32 * U) {
        if (!loaded) {
#pragma unroll
          for (int j = 0; j < U; j++) {
            const int c = c0 + lane + 32 * j;
            if (c < p.hi) {
              wa[j] = ld_stream(w0 + c, pol);
              wb[j] = ld_stream(w1 + c, pol);
            }
          }
        }
        loaded = false;
        if (!next_issued && last_round && c0 + 32 * U >= p.hi) {
          preload_smem(*next, buf);
          next_issued = true;
        }
#pragma unroll
        for (int j = 0; j < U; j++) {
          const int c = c0 + lane + 32 * j;
          if (c < p.hi) {
            float f0[8], f1[8], xv[8];
            unpack8<__nv_bfloat16>(wa[j], f0);
            unpack8<__nv_bfloat16>(wb[j], f1);
            unpack8<__nv_bfloat16>(xs[c], xv);
#pragma unroll
            for (int e = 0; e < 8; e++) {
              acc0 = fmaf(f0[e], xv[e], acc0);
              acc1 = fmaf(f1[e], xv[e], acc1);
            }
          }
        }
      }
    }
    if (!next_issued && last_round) {  // an idle warp in the last round asks now
      preload_smem(*next, buf);
      next_issued = true;
    }
    const float d0 = warp_sum(acc0), d1 = warp_sum(acc1);
    if (op.split == 1) {
      if (active && lane == 0) {
        op.y[2 * u] = __float2bfloat16(d0);
        op.y[2 * u + 1] = __float2bfloat16(d1);
      }
      continue;
    }
    if (lane == 0) {
      partial[warp][0] = d0;
      partial[warp][1] = d1;
    }
    __syncthreads();
    if (active && p.sub == 0 && lane == 0) {
      float s0 = d0, s1 = d1;
      for (int q = 1; q < op.split; q++) {
        s0 += partial[warp + q][0];
        s1 += partial[warp + q][1];
      }
      op.y[2 * u] = __float2bfloat16(s0);
      op.y[2 * u + 1] = __float2bfloat16(s1);
    }
    __syncthreads();
  }
  if (!next_issued) preload_smem(*next, buf);  // a warp with no round at all
  __syncthreads();  // xs is rewritten by the next op
}

#ifndef SPIN_NS
#define SPIN_NS 0
#endif
constexpr unsigned kSpinNs = SPIN_NS;
__device__ __forceinline__ void grid_barrier(unsigned* bar, unsigned target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;\n" ::"l"(bar) : "memory");
    unsigned v;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(bar) : "memory");
      if (v >= target) break;
      __nanosleep(kSpinNs);
    }
  }
  __syncthreads();
}

template <int U>
__global__ void __launch_bounds__(kThreads, 24 / kWarps) op_kernel(Op op) {
  __shared__ float partial[kWarps][2];
  extern __shared__ uint4 xs[];  // kXsBytes
  const uint64_t pol = xk::evict_first_policy();
  uint4 wa[U], wb[U];
  const bool loaded = preload<U>(op, wa, wb, pol);
  grid_dep_wait();
  grid_dep_launch();
  run_op<U>(op, wa, wb, loaded, pol, partial, nullptr, nullptr, xs);
}

template <bool EARLY>
__global__ void __launch_bounds__(kThreads, 24 / kWarps) chain_kernel(const __grid_constant__ Chain c) {
  __shared__ float partial[kWarps][2];
  extern __shared__ uint4 smem[];  // x (kXsBytes), then EARLY: 4 KB per warp
  uint4* xs = smem;
  uint4* buf = smem + kXsBytes / 16 + (threadIdx.x >> 5) * (2 * kUnroll * 32);
  const uint64_t pol = xk::evict_first_policy();
  uint4 wa[kUnroll], wb[kUnroll];
  bool loaded = preload(c.ops[0], wa, wb, pol);
  for (int i = 0; i < c.count; i++) {
    const bool more = i + 1 < c.count;
    run_op(c.ops[i], wa, wb, loaded, pol, partial, EARLY && more ? &c.ops[i + 1] : nullptr, buf, xs);
    if (!more) {
      // Leave the words zero for the next replay: the last block out (every other one has left
      // its last spin before it counts itself) resets them.
      __syncthreads();
      if (threadIdx.x == 0 && atomicAdd(c.bar + 1, 1u) == gridDim.x - 1) {
        c.bar[0] = 0;
        c.bar[1] = 0;
        __threadfence();
      }
      break;
    }
    if (!EARLY) loaded = preload(c.ops[i + 1], wa, wb, pol);
    grid_barrier(c.bar, static_cast<unsigned>(i + 1) * gridDim.x);
    if (EARLY) {
      asm volatile("cp.async.wait_all;\n" ::: "memory");
      const Op& nx = c.ops[i + 1];
      const Place p = place(nx);
      loaded = p.first + p.slot < nx.units;
      const int lane = threadIdx.x & 31;
#pragma unroll
      for (int j = 0; j < kUnroll; j++) {
        if (p.lo + lane + 32 * j < p.hi) {
          wa[j] = buf[j * 32 + lane];
          wb[j] = buf[(kUnroll + j) * 32 + lane];
        }
      }
    }
  }
}

// Variant mlp: gate_up and down as one kernel per layer (split-K over the MLP's inner dimension)
// plus a small reduce kernel. Block b owns inner rows J_b = [j0, j1) (14336 / grid, 36 or 37):
//   phase 1  the dot products of gate row j and up row 14336 + j with x, in pieces of one iteration
//            (a quarter of k) spread over the block's warps, summed in shared memory in a fixed order;
//            h_j = the gate row's dot rounded to bf16 (what the pdl chain's down op reads as x[j]);
//   phase 2  P[b][c] = sum over j in J_b of Wd^T[j][c] * h_j, down's weights stored transposed
//            (row j of Wd^T = column j of Wd, 8 KB contiguous), thread t owning columns 16t..16t+15;
//   reduce   y[c] = bf16(sum over b of P[b][c]) in the order b = 0, 1, ... (deterministic).
// -DMLP_NO_REDUCE: leave the reduce kernel out (timing only: the outputs are then wrong).
#ifndef MLP_NO_REDUCE
#define MLP_NO_REDUCE 0
#endif
constexpr bool kMlpNoReduce = MLP_NO_REDUCE;
constexpr int kInner = 14336, kHidden = 4096, kMaxJ = 64, kRows2 = 4;
struct Mlp {
  const uint4* wgu;  // [2 * kInner, kHidden]
  const uint4* wdt;  // [kInner, kHidden]: down's weights transposed
  const __nv_bfloat16* x;
  __nv_bfloat16* ygu;  // [2 * kInner], the same values the pdl chain's gate_up op stores
  float* part;         // [grid, kHidden]
};

__global__ void __launch_bounds__(kThreads, 24 / kWarps) mlp_kernel(Mlp m) {
  extern __shared__ uint4 xs[];  // kHidden * 2 bytes
  __shared__ float dots[kMaxJ][4][2];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, t = threadIdx.x;
  const int j0 = static_cast<int>(static_cast<int64_t>(blockIdx.x) * kInner / gridDim.x);
  const int j1 = static_cast<int>(static_cast<int64_t>(blockIdx.x + 1) * kInner / gridDim.x);
  const int nj = j1 - j0, pieces = 4 * nj;
  constexpr int nchunk = kHidden / 8;  // 512; a piece is 128 chunks = kUnroll per lane
  const uint64_t pol = xk::evict_first_policy();
  uint4 wa[kUnroll], wb[kUnroll];
  auto load_piece = [&](int p) {
    const int j = j0 + p / 4, q = p % 4;
    const uint4* w0 = m.wgu + static_cast<int64_t>(j) * nchunk + q * 128;
    const uint4* w1 = m.wgu + static_cast<int64_t>(kInner + j) * nchunk + q * 128;
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      wa[u] = ld_stream(w0 + lane + 32 * u, pol);
      wb[u] = ld_stream(w1 + lane + 32 * u, pol);
    }
  };
  // Phase 2's loads: this thread's 32 bytes of row j0 + j of Wd^T into slot r (r < kRows2).
  auto load_row2 = [&](int r, int j) {
    const uint4* row = m.wdt + static_cast<int64_t>(j0 + j) * nchunk + 2 * t;
    wa[r] = ld_stream(row, pol);
    wb[r] = ld_stream(row + 1, pol);
  };
  // Its first kRows2 rows.
  auto load_rows2 = [&]() {
#pragma unroll
    for (int r = 0; r < kRows2; r++) {
      if (r < nj) load_row2(r, r);
    }
  };
  if (warp < pieces) load_piece(warp);
  grid_dep_wait();
  grid_dep_launch();
  for (int c = t; c < nchunk; c += blockDim.x) xs[c] = __ldcg(reinterpret_cast<const uint4*>(m.x) + c);
  __syncthreads();

  for (int p = warp; p < pieces; p += kWarps) {
    const int q = p % 4;
    float acc0 = 0.0f, acc1 = 0.0f;
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      float f0[8], f1[8], xv[8];
      unpack8<__nv_bfloat16>(wa[u], f0);
      unpack8<__nv_bfloat16>(wb[u], f1);
      unpack8<__nv_bfloat16>(xs[q * 128 + lane + 32 * u], xv);
#pragma unroll
      for (int e = 0; e < 8; e++) {
        acc0 = fmaf(f0[e], xv[e], acc0);
        acc1 = fmaf(f1[e], xv[e], acc1);
      }
    }
    // The next piece's weights (or phase 2's first rows) go out before this piece's reduction.
    if (p + kWarps < pieces) {
      load_piece(p + kWarps);
    } else {
      load_rows2();
    }
    const float d0 = warp_sum(acc0), d1 = warp_sum(acc1);
    if (lane == 0) {
      dots[p / 4][q][0] = d0;
      dots[p / 4][q][1] = d1;
    }
  }
  if (warp >= pieces) load_rows2();
  __syncthreads();
  if (t < nj) {
    const float g = ((dots[t][0][0] + dots[t][1][0]) + dots[t][2][0]) + dots[t][3][0];
    const float u = ((dots[t][0][1] + dots[t][1][1]) + dots[t][2][1]) + dots[t][3][1];
    m.ygu[j0 + t] = __float2bfloat16(g);
    m.ygu[kInner + j0 + t] = __float2bfloat16(u);
    dots[t][0][0] = __bfloat162float(__float2bfloat16(g));  // h_j, as down's x would hold it
  }
  __syncthreads();

  // Row by row: a row's registers are reloaded with the row kRows2 further on as soon as its
  // FMAs have consumed them (the loads of the other rows stay in flight).
  float acc[16];
#pragma unroll
  for (int i = 0; i < 16; i++) acc[i] = 0.0f;
  for (int r0 = 0; r0 < nj; r0 += kRows2) {
#pragma unroll
    for (int r = 0; r < kRows2; r++) {
      const int j = r0 + r;
      if (j < nj) {
        float f[16];
        unpack8<__nv_bfloat16>(wa[r], f);
        unpack8<__nv_bfloat16>(wb[r], f + 8);
        const float h = dots[j][0][0];
#pragma unroll
        for (int i = 0; i < 16; i++) acc[i] = fmaf(f[i], h, acc[i]);
        if (j + kRows2 < nj) load_row2(r, j + kRows2);
      }
    }
  }
  float4* out = reinterpret_cast<float4*>(m.part + static_cast<int64_t>(blockIdx.x) * kHidden + 16 * t);
#pragma unroll
  for (int i = 0; i < 4; i++) out[i] = make_float4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]);
}

// y[c] = bf16(sum over the mlp grid's partials of column c, in block order). A block sums 32
// columns: thread t adds float4 t % 8 of rows t / 8, t / 8 + 32, ...; then 32 row groups in order.
__global__ void __launch_bounds__(256) mlp_reduce_kernel(const float* part, int rows, __nv_bfloat16* y) {
  __shared__ float4 s[32][8];
  const int t = threadIdx.x, cq = t % 8, rg = t / 8;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 32 + cq * 4;
  grid_dep_wait();
  grid_dep_launch();
  float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int r = rg; r < rows; r += 32) {
    const float4 v = __ldcg(reinterpret_cast<const float4*>(part + r * kHidden + c0));
    a.x += v.x;
    a.y += v.y;
    a.z += v.z;
    a.w += v.w;
  }
  s[rg][cq] = a;
  __syncthreads();
  if (t < 32) {
    float sum = 0.0f;
    for (int g = 0; g < 32; g++) sum += reinterpret_cast<const float*>(&s[g][t / 4])[t % 4];
    y[blockIdx.x * 32 + t] = __float2bfloat16(sum);
  }
}

__global__ void transpose_bf16(const __nv_bfloat16* in, __nv_bfloat16* out, int rows, int cols) {
  __shared__ __nv_bfloat16 tile[32][33];
  const int bx = blockIdx.x * 32, by = blockIdx.y * 32;
  for (int i = threadIdx.y; i < 32; i += 8) tile[i][threadIdx.x] = in[static_cast<int64_t>(by + i) * cols + bx + threadIdx.x];
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) out[static_cast<int64_t>(bx + i) * rows + by + threadIdx.x] = tile[threadIdx.x][i];
}

int pick_split(int units, int nchunk, int resident_warps) {
  int best_sp = 1;
  double best = 0;
  for (int sp = 1; sp <= kWarps; sp *= 2) {
    if (sp > 1 && nchunk / sp < 128) break;
    const double cost = static_cast<double>((static_cast<int64_t>(units) * sp + resident_warps - 1) / resident_warps) / sp;
    if (sp == 1 || cost < best - 1e-9) {
      best = cost;
      best_sp = sp;
    }
  }
  return best_sp;
}

__global__ void fill_random(uint32_t* p, size_t words, uint32_t seed) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < words; i += gridDim.x * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    // two bf16 in [-1, 1): sign, exponent 126 or less, random mantissa
    const uint32_t lo = (x & 0x807fu) | 0x3c00u, hi = ((x >> 16) & 0x807fu) | 0x3c00u;
    p[i] = lo | (hi << 16);
  }
}

}  // namespace

int run() {
  setvbuf(stdout, nullptr, _IONBF, 0);
  int dev = 0, sms = 0;
  CK(cudaSetDevice(dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, dev));
  const int shapes[4][2] = {{6144, 4096}, {4096, 4096}, {28672, 4096}, {4096, 14336}};
  const int layers = 4, nops = 4 * layers;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

  int per_sm_op = 0, per_sm_chain = 0, per_sm_early = 0;
  const size_t early_smem = kXsBytes + kWarps * 2 * kUnroll * 32 * sizeof(uint4);
  CK(cudaFuncSetAttribute(op_kernel<kUnroll>, cudaFuncAttributeMaxDynamicSharedMemorySize, kXsBytes));
  CK(cudaFuncSetAttribute(op_kernel<kDownUnroll>, cudaFuncAttributeMaxDynamicSharedMemorySize, kXsBytes));
  CK(cudaFuncSetAttribute(chain_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, kXsBytes));
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_op, op_kernel<kUnroll>, kThreads, kXsBytes));
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_chain, chain_kernel<false>, kThreads, kXsBytes));
  CK(cudaFuncSetAttribute(chain_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(early_smem)));
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_early, chain_kernel<true>, kThreads, early_smem));
  int per_sm_mlp = 0;
  CK(cudaFuncSetAttribute(mlp_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kHidden * 2));
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_mlp, mlp_kernel, kThreads, kHidden * 2));
  const int mlp_grid = per_sm_mlp * sms;
  if (kInner / mlp_grid + 1 > kMaxJ) throw std::runtime_error("mlp grid too small for kMaxJ");
  const int per_sm = std::min({per_sm_op, per_sm_chain, per_sm_early});
  const int blocks = per_sm * sms;
  std::printf("%s, %d SMs; blocks per SM: op %d, chain %d, early %d -> grid %d\n", prop.name, sms, per_sm_op,
              per_sm_chain, per_sm_early, blocks);

  // Weights, activations (one buffer per op output, 28672 wide, zero first), the barrier word.
  std::vector<Op> ops(nops);
  std::vector<const uint4*> wdt;
  std::vector<void*> owned;
  size_t weight_bytes = 0;
  __nv_bfloat16* x0 = nullptr;
  CK(cudaMalloc(&x0, 28672 * 2));
  owned.push_back(x0);
  CK(cudaMemset(x0, 0, 28672 * 2));
  fill_random<<<64, 256, 0, s>>>(reinterpret_cast<uint32_t*>(x0), 4096 / 2, 7);
  std::vector<__nv_bfloat16*> ys[5];
  for (int v = 0; v < 5; v++) {
    for (int i = 0; i < nops; i++) {
      __nv_bfloat16* y = nullptr;
      CK(cudaMalloc(&y, 28672 * 2));
      CK(cudaMemset(y, 0, 28672 * 2));
      owned.push_back(y);
      ys[v].push_back(y);
    }
  }
  for (int i = 0; i < nops; i++) {
    const int n = shapes[i % 4][0], k = shapes[i % 4][1];
    void* w = nullptr;
    const size_t bytes = static_cast<size_t>(n) * k * 2;
    CK(cudaMalloc(&w, bytes));
    owned.push_back(w);
    fill_random<<<1024, 256, 0, s>>>(static_cast<uint32_t*>(w), bytes / 4, 1000u + i);
    weight_bytes += bytes;
    if (k == kInner) {  // down: a transposed copy for the mlp variant
      void* wt = nullptr;
      CK(cudaMalloc(&wt, bytes));
      owned.push_back(wt);
      transpose_bf16<<<dim3(k / 32, n / 32), dim3(32, 8), 0, s>>>(static_cast<const __nv_bfloat16*>(w),
                                                                 static_cast<__nv_bfloat16*>(wt), n, k);
      wdt.push_back(static_cast<const uint4*>(wt));
    }
    Op& op = ops[i];
    op.w = static_cast<const uint4*>(w);
    op.n = n;
    op.k = k;
    op.units = n / 2;
    op.split = pick_split(op.units, k / 8, per_sm_op * sms * kWarps);
  }
  float* part = nullptr;
  CK(cudaMalloc(&part, static_cast<size_t>(mlp_grid) * kHidden * 4));
  owned.push_back(part);
  unsigned* bar = nullptr;
  CK(cudaMalloc(&bar, 8));
  CK(cudaMemset(bar, 0, 8));
  owned.push_back(bar);
  CK(cudaStreamSynchronize(s));
  auto wire = [&](int v) {
    std::vector<Op> o = ops;
    for (int i = 0; i < nops; i++) {
      o[i].x = i == 0 ? x0 : ys[v][i - 1];
      o[i].y = ys[v][i];
    }
    return o;
  };

  // Graphs: pdl (one kernel per op, programmatic edges), chain and early (one kernel each).
  auto capture = [&](int v) {
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    std::vector<Op> o = wire(v);
    cudaLaunchAttribute pdl{};
    pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    pdl.val.programmaticStreamSerializationAllowed = 1;
    auto config = [&](int grid, size_t smem) {
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3(static_cast<unsigned>(grid));
      cfg.blockDim = dim3(kThreads);
      cfg.dynamicSmemBytes = smem;
      cfg.stream = s;
      cfg.attrs = &pdl;
      cfg.numAttrs = 1;
      return cfg;
    };
    if (v == 4) {
      for (int i = 0; i < nops; i++) {
        if (i % 4 < 2) {
          cudaLaunchConfig_t cfg = config(std::min(per_sm_op * sms, (o[i].units + kWarps / o[i].split - 1) / (kWarps / o[i].split)),
                                          static_cast<size_t>(o[i].k) * 2);
          CK(cudaLaunchKernelEx(&cfg, op_kernel<kUnroll>, o[i]));
        } else if (i % 4 == 2) {
          Mlp m{o[i].w, wdt[i / 4], o[i].x, o[i].y, part};
          cudaLaunchConfig_t cfg = config(mlp_grid, kHidden * 2);
          CK(cudaLaunchKernelEx(&cfg, mlp_kernel, m));
        } else if (!kMlpNoReduce) {
          cudaLaunchConfig_t cfg = config(kHidden / 32, 0);
          CK(cudaLaunchKernelEx(&cfg, mlp_reduce_kernel, static_cast<const float*>(part), mlp_grid, o[i].y));
        }
      }
    } else if (v == 0 || v == 3) {
      for (int i = 0; i < nops; i++) {
        cudaLaunchConfig_t cfg{};
        cfg.gridDim = dim3(static_cast<unsigned>(std::min(per_sm_op * sms, (o[i].units + kWarps / o[i].split - 1) / (kWarps / o[i].split))));
        cfg.blockDim = dim3(kThreads);
        cfg.dynamicSmemBytes = static_cast<size_t>(o[i].k) * 2;
        cfg.stream = s;
        cudaLaunchAttribute at{};
        at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at.val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = &at;
        cfg.numAttrs = 1;
        if (v == 3 && o[i].k == 14336) {
          CK(cudaLaunchKernelEx(&cfg, op_kernel<kDownUnroll>, o[i]));
        } else {
          CK(cudaLaunchKernelEx(&cfg, op_kernel<kUnroll>, o[i]));
        }
      }
    } else {
      Chain c{};
      for (int i = 0; i < nops; i++) c.ops[i] = o[i];
      c.count = nops;
      c.bar = bar;
      if (v == 1) {
        chain_kernel<false><<<blocks, kThreads, kXsBytes, s>>>(c);
      } else {
        chain_kernel<true><<<blocks, kThreads, early_smem, s>>>(c);
      }
      CK(cudaGetLastError());
    }
    CK(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t e;
    CK(cudaGraphInstantiate(&e, g, 0));
    CK(cudaGraphDestroy(g));
    return e;
  };
  std::vector<int> vs = {0, 1, 2};
  if (kDownUnroll != kUnroll) vs.push_back(3);
  vs.push_back(4);
  const char* names[5] = {"pdl", "chain", "early", "pdl-dU", "mlp"};
  cudaGraphExec_t exec[5];
  for (int v : vs) exec[v] = capture(v);
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> times[5];
  for (int rep = 0; rep < 5; rep++) {
    for (int v : vs) {
      for (int w = 0; w < 3; w++) CK(cudaGraphLaunch(exec[v], s));
      for (int it = 0; it < 40; it++) {
        CK(cudaEventRecord(a, s));
        CK(cudaGraphLaunch(exec[v], s));
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, a, b));
        times[v].push_back(ms);
      }
    }
  }
  std::printf("16 ops (4 layers: qkv, o, gate_up, down), %.3f GB of weights; splits:", weight_bytes / 1e9);
  for (int i = 0; i < 4; i++) std::printf(" %d", ops[i].split);
  std::printf("; mlp grid %d (%d per SM)\n", mlp_grid, per_sm_mlp);
  double base = 0;
  for (int v : vs) {
    std::vector<float>& t = times[v];
    std::sort(t.begin(), t.end());
    const double med = t[t.size() / 2] * 1e3, lo = t.front() * 1e3;
    if (v == 0) base = med;
    std::printf("%-6s median %8.1f us  min %8.1f us  (%.2f TB/s)  vs pdl %+7.1f us = %+5.2f us per boundary\n", names[v],
                med, lo, weight_bytes / (med * 1e-6) / 1e12, med - base, (med - base) / (nops - 1));
  }
  // Same outputs from all three (same loop, same summation order).
  std::vector<uint16_t> h[5];
  for (int v : vs) {
    h[v].resize(28672);
    CK(cudaMemcpy(h[v].data(), ys[v][nops - 1], 28672 * 2, cudaMemcpyDeviceToHost));
  }
  const bool same = h[0] == h[1] && h[0] == h[2] && (kDownUnroll == kUnroll || h[0] == h[3]);
  int nonzero = 0;
  for (int i = 0; i < 4096; i++) nonzero += h[0][i] != 0;
  std::printf("outputs: %s (last op, %d of 4096 nonzero)\n", same ? "identical" : "DIFFERENT", nonzero);
  // mlp sums in another order: layer 0's gate_up and down outputs against pdl's, in bf16 ulps of
  // the largest value (the first op that differs in order is down).
  auto bf = [](uint16_t u) {
    uint32_t w = static_cast<uint32_t>(u) << 16;
    float f;
    std::memcpy(&f, &w, 4);
    return f;
  };
  bool mlp_ok = true;
  for (int op = 2; op <= 3; op++) {
    const int n = op == 2 ? 28672 : 4096;
    std::vector<uint16_t> a(n), b(n);
    CK(cudaMemcpy(a.data(), ys[0][op], n * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(b.data(), ys[4][op], n * 2, cudaMemcpyDeviceToHost));
    double mx = 0, diff = 0;
    int differ = 0;
    for (int i = 0; i < n; i++) {
      mx = std::max(mx, static_cast<double>(std::fabs(bf(a[i]))));
      diff = std::max(diff, static_cast<double>(std::fabs(bf(a[i]) - bf(b[i]))));
      differ += a[i] != b[i];
    }
    const bool ok = diff <= 1e-2 * mx && mx > 0;
    mlp_ok = mlp_ok && ok;
    std::printf("mlp vs pdl, layer 0 %s: max |diff| %.3g of max |y| %.3g, %d of %d differ: %s\n",
                op == 2 ? "gate_up" : "down", diff, mx, differ, n, ok ? "ok" : "WRONG");
  }
  for (void* p : owned) CK(cudaFree(p));
  return same && mlp_ok ? 0 : 2;
}

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
