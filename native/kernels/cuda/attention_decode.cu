// Paged attention per query token: the decode path (and a generic fallback for any head size).
//
// decode (HD 64/128, tensor cores): a block owns one token, one KV head and one split of its
// context; its 16 MMA rows are that KV head's query heads (GQA: up to 16 per block, more heads use
// more blocks), so each K/V byte is read once per token. Key tiles of 64 stream through a 3-stage
// cp.async ring; warp w takes keys 16w..16w+15 of every tile with its own running softmax, and the
// 4 warps merge at the end. The grid has a.splits splits per token (planned by the host for the
// longest context the call may see); each token divides its own keys evenly among at most that
// many (whole key tiles, none under min_split_keys keys), so a short context runs in one pass and
// writes its output directly, whatever the plan. With several splits each writes a normalized
// partial (o, max, sum) to the workspace, merged either by the split that finishes last (arrival
// counters, a.counters: no second kernel) or by combine_kernel: the flash-decoding scheme, so
// short batches of long sequences still fill the GPU. Correct for any query length (each token
// attends causally up to its own position), so mixed batches are fine; the host picks it when most
// sequences decode.
//
// lean (HD 64/128, tensor cores): for one query token (batch-1 decode), one 64-key tile per
// block of 4 warps at 32 registers, small enough to start beside the previous kernel's blocks
// (see decode_lean_impl); its splits always go to combine_kernel.
//
// generic: one block per (token, query head), scalar f32, any head_dim <= 256.
//
// The decode and combine kernels are launched with programmatic dependent launch (runtime.cc):
// they start while the kernel before them finishes and wait for it before reading anything.
#include "attention.cuh"

namespace xk {
namespace {

constexpr int kBN = 64, kThreads = 128, kStages = 3;
constexpr int kTableCache = 1024;  // block-table columns a decode block keeps in shared memory
// By default no split of a token's keys is shorter than this (a shorter split costs more in its
// merge than it saves); the host lowers it to one key tile (AttnArgs::min_split_keys) for batches
// too small to fill the GPU, where a token's keys would otherwise stream through a handful of blocks.
constexpr int kMinSplitKeys = 256;

struct TokenCtx {
  int seq, kend;  // keys [0, kend) are visible to the token; kend < 0: bad metadata (reported)
};

__device__ TokenCtx token_ctx(const AttnArgs& a, int t, bool reporter) {
  const int32_t* qsl = reinterpret_cast<const int32_t*>(a.qsl);
  const int b = seq_of_token(qsl, a.num_seqs, t);
  const int q0 = qsl[b], qlen = qsl[b + 1] - q0;
  const int seq_len = reinterpret_cast<const int32_t*>(a.seq_lens)[b];
  const int cap = a.max_blocks * a.block_size;
  if (reporter && t == 0 && (qsl[0] != 0 || qsl[a.num_seqs] != a.tokens)) {
    report(a.err, kErrQueryStartLoc, qsl[0] != 0 ? 0 : a.num_seqs, qsl[0] != 0 ? qsl[0] : qsl[a.num_seqs], a.tokens);
  }
  if (t < q0 || t >= q0 + qlen) {
    if (reporter) report(a.err, kErrQueryStartLoc, b + 1, qsl[b + 1], t + 1);
    return {b, -1};
  }
  if (seq_len < qlen || seq_len > cap) {
    if (reporter && t == q0) report(a.err, kErrSeqLen, b, seq_len, cap, qlen);
    return {b, -1};
  }
  return {b, seq_len - qlen + (t - q0) + 1};
}

struct TokenSplits {
  int n, len;  // splits [0, n) hold keys [s·len, min((s + 1)·len, kend)), none empty
};

// How a token with keys [0, kend) divides them among at most a.splits splits (kend < 0, bad
// metadata: one split, no keys).
__device__ __forceinline__ TokenSplits token_splits(const AttnArgs& a, int kend) {
  const int min_keys = a.min_split_keys > 0 ? a.min_split_keys : kMinSplitKeys;
  if (a.splits == 1 || kend <= min_keys) return {1, max(kend, 0)};
  const int want = min(a.splits, (kend + min_keys - 1) / min_keys);
  const int len = ((kend + want - 1) / want + kBN - 1) / kBN * kBN;
  return {(kend + len - 1) / len, len};
}

// Token t's context and the keys [k_begin, k_stop) of its split `split`; a context longer than
// the maxSeqLen the call was planned for (options.maxSeqLen is a promise) is refused (reported,
// kend -1).
struct SplitKeys {
  TokenCtx ctx;
  TokenSplits ts;
  int k_begin, k_stop;
};

__device__ __forceinline__ SplitKeys split_keys(const AttnArgs& a, int t, int split, bool reporter) {
  TokenCtx ctx = token_ctx(a, t, reporter);
  if (ctx.kend > static_cast<int64_t>(a.splits) * a.split_len) {
    if (reporter) report(a.err, kErrSeqLen, ctx.seq, ctx.kend, static_cast<int64_t>(a.splits) * a.split_len, 1);
    ctx.kend = -1;
  }
  const TokenSplits ts = token_splits(a, ctx.kend);
  const int k_begin = split * ts.len;
  return {ctx, ts, k_begin, min(ctx.kend, k_begin + ts.len)};
}

template <typename T, int HD>
__device__ void decode_impl(const AttnArgs& a) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int NO = HD / 8, TILE = kBN * HD * 2;
  const int t = blockIdx.x, split = blockIdx.z;
  const int g = blockIdx.y / a.head_chunks, chunk = blockIdx.y % a.head_chunks;
  const int group = a.num_heads / a.num_kv_heads;
  const int h0 = g * group + chunk * 16, nrows = min(16, group - chunk * 16);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const bool reporter = threadIdx.x == 0 && blockIdx.y == 0 && split == 0;
  // Launched with programmatic dependent launch: q and the cache come from before, and an earlier
  // call's combine may still read the partials, so those wait for grid_dep_wait. Metadata the
  // previous kernel did not write (a.host_metadata) loads before it, while that kernel drains.
  const bool early = a.host_metadata != 0;
  if (!early) {
    grid_dep_wait();
    grid_dep_launch();
  }
  SplitKeys sk = split_keys(a, t, split, reporter);
  TokenCtx& ctx = sk.ctx;
  const TokenSplits ts = sk.ts;
  const int k_begin = sk.k_begin, k_stop = sk.k_stop;
  // combine_kernel reads a partial of every planned split; merged here, only the token's own splits
  // exist, and a token in one split writes its output directly.
  const bool merge_here = a.counters != 0;
  const bool direct = a.splits == 1 || (merge_here && ts.n == 1);
  float* part_ml = reinterpret_cast<float*>(a.part_ml);
  const int64_t prow = static_cast<int64_t>(t) * a.num_heads;  // partial rows of this token
  if (ctx.kend < 0 || k_begin >= k_stop) {
    if (early) {
      grid_dep_wait();
      grid_dep_launch();
    }
    if (!direct && !merge_here) {
      // Nothing to attend in this split: an empty partial for combine_kernel.
      for (int r = threadIdx.x; r < nrows; r += kThreads) {
        float* ml = part_ml + ((prow + h0 + r) * a.splits + split) * 2;
        ml[0] = -INFINITY;
        ml[1] = 0.0f;
      }
    } else if (split == 0) {
      // Only bad metadata leaves split 0 without keys: NaN rows (the error was reported).
      T* out = reinterpret_cast<T*>(a.out) + static_cast<int64_t>(t) * a.ld_out + h0 * HD;
      for (int i = threadIdx.x; i < nrows * HD; i += kThreads) out[i] = nan_of<T>();
    }
    return;  // merged here, a split past the token's own has nothing to write and counts nothing
  }
  const int32_t* row = reinterpret_cast<const int32_t*>(a.block_tables) + static_cast<int64_t>(ctx.seq) * a.max_blocks;
  const int n_tiles = (k_stop - k_begin + kBN - 1) / kBN;
  // The block-table columns of this split, copied to shared memory once (checked once), so the
  // loads that feed the cp.async ring do not wait on the table.
  __shared__ int32_t s_table[kTableCache];
  TableView table = make_table_view(a, row);
  cache_table<kTableCache, kThreads>(table, s_table, a, row, ctx.seq, k_begin, k_stop);
  __syncthreads();
  if (early) {
    grid_dep_wait();
    grid_dep_launch();
  }

  const uint32_t q_tile = smem_u32(smem);
  const uint32_t kv0 = q_tile + 16 * HD * 2;  // stage s: K at kv0 + 2s·TILE, V right after
  const T* q = reinterpret_cast<const T*>(a.q) + static_cast<int64_t>(t) * a.ld_q + h0 * HD;
  load_rows<T, HD, 16, kThreads>(q_tile, q, HD, nrows);
#pragma unroll
  for (int s = 0; s < kStages - 1; s++) {
    if (s < n_tiles) {
      const uint32_t st = kv0 + s * 2 * TILE;
      load_kv_tile<T, HD, kBN, kThreads>(st, st + TILE, a, table, ctx.seq, k_begin + s * kBN, k_stop, g);
    }
    cp_async_commit();
  }

  uint32_t qf[HD / 16][4];
  float o[NO][4];
#pragma unroll
  for (int n = 0; n < NO; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (int j = 0; j < n_tiles; j++) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile j landed; every warp finished tile j-1, whose stage is refilled next
    if (j == 0) load_a_frags<HD>(qf, q_tile, 0);
    const int nxt = j + kStages - 1;
    if (nxt < n_tiles) {
      const uint32_t st = kv0 + (nxt % kStages) * 2 * TILE;
      load_kv_tile<T, HD, kBN, kThreads>(st, st + TILE, a, table, ctx.seq, k_begin + nxt * kBN, k_stop, g);
    }
    cp_async_commit();
    const uint32_t k_tile = kv0 + (j % kStages) * 2 * TILE, v_tile = k_tile + TILE;
    float s[2][4];
    qk<T, HD, 2>(s, qf, k_tile, warp * 16);
    const int key0 = k_begin + j * kBN + warp * 16;
#pragma unroll
    for (int n = 0; n < 2; n++) {
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const bool dead = key0 + n * 8 + (lane & 3) * 2 + e >= k_stop;
        s[n][e] = dead ? -INFINITY : s[n][e] * a.scale_log2;
        s[n][2 + e] = dead ? -INFINITY : s[n][2 + e] * a.scale_log2;
      }
    }
    softmax_step<2, NO>(s, m, l, o);
    pv<T, HD, 1>(o, s, v_tile, warp * 16);
  }

  // Merge the 4 warps through shared memory (the K/V ring is free once every copy landed).
  cp_async_wait<0>();
  __syncthreads();
  float* red_m = reinterpret_cast<float*>(smem + 16 * HD * 2);  // [4][16]
  float* red_l = red_m + 4 * 16;                                  // [4][16]
  float* red_o = red_l + 4 * 16;                                  // [4][16][HD]
#pragma unroll
  for (int half = 0; half < 2; half++) {
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 1);
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 2);
    const int r = (lane >> 2) + 8 * half;
    if ((lane & 3) == 0) {
      red_m[warp * 16 + r] = m[half];
      red_l[warp * 16 + r] = l[half];
    }
#pragma unroll
    for (int n = 0; n < NO; n++) {
      const int col = n * 8 + (lane & 3) * 2;
      red_o[(warp * 16 + r) * HD + col] = o[n][2 * half];
      red_o[(warp * 16 + r) * HD + col + 1] = o[n][2 * half + 1];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < nrows * HD; i += kThreads) {
    const int r = i / HD, d = i % HD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < 4; w++) mx = fmaxf(mx, red_m[w * 16 + r]);
    float sum = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < 4; w++) {
      const float mw = red_m[w * 16 + r];
      if (mw == -INFINITY) continue;  // this warp saw no key of the split
      const float f = exp2f(mw - mx);
      sum += red_l[w * 16 + r] * f;
      acc += red_o[(w * 16 + r) * HD + d] * f;
    }
    if (direct) {
      T* out = reinterpret_cast<T*>(a.out) + static_cast<int64_t>(t) * a.ld_out + (h0 + r) * HD;
      out[d] = from_f<T>(acc / sum);
    } else {
      const int64_t prow_h = (prow + h0 + r) * a.splits + split;
      reinterpret_cast<float*>(a.part_o)[prow_h * HD + d] = acc / sum;
      if (d == 0) {
        part_ml[prow_h * 2] = mx;
        part_ml[prow_h * 2 + 1] = sum;
      }
    }
  }
  if (direct || !merge_here) return;

  // The last of the token's ts.n splits to arrive merges every partial of its rows (threadFence-
  // Reduction's pattern: each block's writes are fenced before it counts itself; the counter wraps
  // back to 0 for the next call). Partials are read through L2: other blocks wrote them.
  __shared__ int s_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned* counter = reinterpret_cast<unsigned*>(a.counters) + static_cast<int64_t>(t) * gridDim.y + blockIdx.y;
    s_last = atomicInc(counter, static_cast<unsigned>(ts.n - 1)) == static_cast<unsigned>(ts.n - 1);
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const float* po = reinterpret_cast<const float*>(a.part_o);
  for (int i = threadIdx.x; i < nrows * HD; i += kThreads) {
    const int r = i / HD, d = i % HD;
    const int64_t row0 = (prow + h0 + r) * a.splits;
    float mx = -INFINITY;
    for (int sp = 0; sp < ts.n; sp++) mx = fmaxf(mx, __ldcg(part_ml + (row0 + sp) * 2));
    float sum = 0.0f, acc = 0.0f;
    for (int sp = 0; sp < ts.n; sp++) {
      const float w = __ldcg(part_ml + (row0 + sp) * 2 + 1) * exp2f(__ldcg(part_ml + (row0 + sp) * 2) - mx);
      sum += w;
      acc += w * __ldcg(po + (row0 + sp) * HD + d);
    }
    T* out = reinterpret_cast<T*>(a.out) + static_cast<int64_t>(t) * a.ld_out + (h0 + r) * HD;
    out[d] = from_f<T>(acc / sum);
  }
}

// The lean decode kernel, for one query token (batch-1 decode; the host launches it when every
// split is one key tile and a combine kernel merges them). Its block — 4 warps of at most 32
// registers, ~36 KB of shared memory — fits beside the one-row linears' persistent grid: 3 blocks
// × 8 warps × 80 registers leave 1,024 registers in each of an SM's 4 register files (one warp of
// 32), and the batch-1 decode chain runs at a shared-memory carveout with room for it
// (DeviceRuntime::decode_carveout). So it launches while the qkv projection streams, reads its
// metadata and block table then, and waits at grid_dep_wait on the SM, instead of landing only
// after the projection's blocks have left (measured on an H200: 6.5 → 2.45 µs a layer). With
// a.early_keys it also copies the keys and values of earlier steps before the wait: only this
// call's rows are the previous kernel's output.
//
// The tensor-core products run transposed, so that the query heads are the MMA's 8 columns rather
// than 16 padded rows: warp w scores keys 16w..16w+15 (Sᵀ = K·qᵀ), the probabilities go through
// shared memory in Pᵀ's operand layout (movmatrix), and warp w accumulates dims HD/4·w.. of
// Oᵀ = Vᵀ·Pᵀ over the tile's 64 keys. A block owns one (token, KV head, group of at most 8 of its
// query heads, split) of at most one tile.
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

constexpr int kLeanHeads = 8, kLeanTable = 64, kLeanThreads = 128;

// Copies the rows of keys [lo, hi) of the tile that starts at key0 through the block table (a bad
// block id gives a zero row and is reported); with zero_from >= 0 the rows at or past it become
// zeros (they are masked, but 0 · NaN would not be).
template <typename T, int HD>
__device__ __forceinline__ void lean_load(uint32_t k_tile, uint32_t v_tile, const AttnArgs& a, const TableView& tv,
                                          int seq, int key0, int lo, int hi, int zero_from, int g) {
  constexpr int CH = HD / 8;
  const T* kc = reinterpret_cast<const T*>(a.k_cache);
  const T* vc = reinterpret_cast<const T*>(a.v_cache);
  for (int i = threadIdx.x; i < kBN * CH; i += kLeanThreads) {
    const int r = i / CH, c = i % CH, key = key0 + r;
    const bool fill = key >= lo && key < hi;
    if (!fill && !(zero_from >= 0 && key >= zero_from)) continue;
    copy_kv_chunk<T, HD>(k_tile, v_tile, kc, vc, a, tv, seq, key, r, c, fill, g);
  }
}

template <typename T, int HD>
__device__ void decode_lean_impl(const AttnArgs& a) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int TILE = kBN * HD * 2, KS = HD / 16, DT = HD / 64;  // DT: 16-dim tiles of Oᵀ per warp
  __shared__ int32_t s_table[kLeanTable];
  __shared__ uint32_t s_p[4][2][32];        // Pᵀ operands of each warp's 16 keys, in fragment order
  __shared__ float s_max[4][kLeanHeads], s_sum[4][kLeanHeads];
  const int t = blockIdx.x, split = blockIdx.z;
  const int g = blockIdx.y / a.head_chunks, chunk = blockIdx.y % a.head_chunks;
  const int group = a.num_heads / a.num_kv_heads;
  const int h0 = g * group + chunk * kLeanHeads, nrows = min(kLeanHeads, group - chunk * kLeanHeads);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const bool reporter = threadIdx.x == 0 && blockIdx.y == 0 && split == 0;
  const bool early = a.host_metadata != 0;
  if (!early) {
    grid_dep_wait();
    grid_dep_launch();
  }
  SplitKeys sk = split_keys(a, t, split, reporter);
  TokenCtx& ctx = sk.ctx;
  const TokenSplits ts = sk.ts;
  const int k_begin = sk.k_begin, k_stop = sk.k_stop;
  if (ts.len > kBN) {
    // The host launches this kernel only for plans of one key tile per split (AttnPlan::lean).
    if (reporter) report(a.err, kErrSeqLen, ctx.seq, ctx.kend, static_cast<int64_t>(a.splits) * kBN, 1);
    ctx.kend = -1;
  }
  if (ctx.kend < 0 || k_begin >= k_stop) {
    // combine_kernel reads only the token's own splits: a split past them has nothing to write.
    if (ctx.kend < 0 && split == 0) {
      // Only bad metadata leaves split 0 without keys (the error was reported): NaN rows
      // (combine_kernel, which reads no partial of such a token, writes them again).
      if (early) {
        grid_dep_wait();
        grid_dep_launch();
      }
      T* out = reinterpret_cast<T*>(a.out) + static_cast<int64_t>(t) * a.ld_out + h0 * HD;
      for (int i = threadIdx.x; i < nrows * HD; i += kLeanThreads) out[i] = nan_of<T>();
    }
    return;
  }
  // This call's keys of the sequence (its query tokens') are the previous kernel's output; the
  // keys before them were written by earlier calls.
  const int32_t* qsl = reinterpret_cast<const int32_t*>(a.qsl);
  const int fresh0 = reinterpret_cast<const int32_t*>(a.seq_lens)[ctx.seq] - (qsl[ctx.seq + 1] - qsl[ctx.seq]);
  const int32_t* row = reinterpret_cast<const int32_t*>(a.block_tables) + static_cast<int64_t>(ctx.seq) * a.max_blocks;
  TableView table = make_table_view(a, row);
  cache_table<kLeanTable, kLeanThreads>(table, s_table, a, row, ctx.seq, k_begin, k_stop);
  __syncthreads();
  const uint32_t q_tile = smem_u32(smem);
  const uint32_t k_tile = q_tile + kLeanHeads * HD * 2, v_tile = k_tile + TILE;
  const int pre_hi = early && a.early_keys != 0 ? min(k_stop, fresh0) : k_begin;
  lean_load<T, HD>(k_tile, v_tile, a, table, ctx.seq, k_begin, k_begin, pre_hi, k_stop, g);
  cp_async_commit();
  if (early) {
    grid_dep_wait();
    grid_dep_launch();
  }
  const T* q = reinterpret_cast<const T*>(a.q) + static_cast<int64_t>(t) * a.ld_q + h0 * HD;
  load_rows<T, HD, kLeanHeads, kLeanThreads>(q_tile, q, HD, nrows);
  lean_load<T, HD>(k_tile, v_tile, a, table, ctx.seq, k_begin, max(k_begin, pre_hi), k_stop, -1, g);
  cp_async_commit();

  // The thread's two heads (columns) are 2·(lane%4) and 2·(lane%4)+1 in every fragment below.
  cp_async_wait<0>();
  __syncthreads();
  float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // Sᵀ: keys k_begin + 16·warp + lane/4 (+8)
#pragma unroll
  for (int ks = 0; ks < KS; ks++) {
    uint32_t ka[4], qb[2];
    ldmatrix_x4(ka, k_tile + tile_off<HD>(warp * 16 + (lane & 15), ks * 2 + (lane >> 4)));
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(qb[0]), "=r"(qb[1])
                 : "r"(q_tile + tile_off<HD>(lane & 7, ks * 2 + ((lane >> 3) & 1))));
    mma16816<T>(s, ka, qb[0], qb[1]);
  }
#pragma unroll
  for (int e = 0; e < 4; e++) {
    const int key = k_begin + warp * 16 + (lane >> 2) + (e >> 1) * 8;
    s[e] = key < k_stop ? s[e] * a.scale_log2 : -INFINITY;
  }
#pragma unroll
  for (int e = 0; e < 2; e++) {
    float mx = fmaxf(s[e], s[e + 2]);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
    if (lane < 4) s_max[warp][2 * lane + e] = mx;
  }
  __syncthreads();
  float m[2], l[2];
#pragma unroll
  for (int e = 0; e < 2; e++) {
    const int hc = 2 * (lane & 3) + e;
    m[e] = fmaxf(fmaxf(s_max[0][hc], s_max[1][hc]), fmaxf(s_max[2][hc], s_max[3][hc]));  // finite: a key is visible
    s[e] = exp2f(s[e] - m[e]);
    s[e + 2] = exp2f(s[e + 2] - m[e]);
    float sum = s[e] + s[e + 2];
    sum += __shfl_xor_sync(0xffffffffu, sum, 4);
    sum += __shfl_xor_sync(0xffffffffu, sum, 8);
    sum += __shfl_xor_sync(0xffffffffu, sum, 16);
    if (lane < 4) s_sum[warp][2 * lane + e] = sum;
  }
  s_p[warp][0][lane] = movmatrix_trans(pack2<T>(s[0], s[1]));
  s_p[warp][1][lane] = movmatrix_trans(pack2<T>(s[2], s[3]));
  __syncthreads();
#pragma unroll
  for (int e = 0; e < 2; e++) {
    const int hc = 2 * (lane & 3) + e;
    l[e] = (s_sum[0][hc] + s_sum[1][hc]) + (s_sum[2][hc] + s_sum[3][hc]);
  }
  float o[DT][4];  // Oᵀ: dims 16·(DT·warp + i) + lane/4 (+8)
#pragma unroll
  for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    const uint32_t b0 = s_p[kk][0][lane], b1 = s_p[kk][1][lane];
    const int vrow = kk * 16 + (lane & 7) + ((lane >> 4) << 3);
#pragma unroll
    for (int i = 0; i < DT; i++) {
      uint32_t va[4];
      ldmatrix_x4_trans(va, v_tile + tile_off<HD>(vrow, (DT * warp + i) * 2 + ((lane >> 3) & 1)));
      mma16816<T>(o[i], va, b0, b1);
    }
  }
  const bool direct = a.splits == 1;
  const int64_t prow = static_cast<int64_t>(t) * a.num_heads;
#pragma unroll
  for (int e = 0; e < 2; e++) {
    const int hr = 2 * (lane & 3) + e;
    if (hr >= nrows) continue;
    const float inv = 1.0f / l[e];
    const int d0 = 16 * DT * warp + (lane >> 2);
    if (direct) {
      T* out = reinterpret_cast<T*>(a.out) + static_cast<int64_t>(t) * a.ld_out + (h0 + hr) * HD + d0;
#pragma unroll
      for (int i = 0; i < DT; i++) {
        out[16 * i] = from_f<T>(o[i][e] * inv);
        out[16 * i + 8] = from_f<T>(o[i][e + 2] * inv);
      }
    } else {
      const int64_t prow_h = (prow + h0 + hr) * a.splits + split;
      float* po = reinterpret_cast<float*>(a.part_o) + prow_h * HD + d0;
#pragma unroll
      for (int i = 0; i < DT; i++) {
        po[16 * i] = o[i][e] * inv;
        po[16 * i + 8] = o[i][e + 2] * inv;
      }
      if (warp == 0 && lane < 4) {
        float* ml = reinterpret_cast<float*>(a.part_ml) + prow_h * 2;
        ml[0] = m[e];
        ml[1] = l[e];
      }
    }
  }
}

// out[t, h] = Σ_s w_s o_s / Σ_s w_s with w_s = sum_s · 2^(max_s − max): the splits' partials merged.
// Only the token's own splits are read (the planned splits past them hold empty partials or, from
// the lean kernel, nothing), none for bad metadata: their
// count comes from the metadata before grid_dep_wait — the host wrote it before the forward, and
// the decode kernel before this one waits for its own predecessor before letting this one launch.
// After the wait, each thread's first partials load while warp 0 reads the splits' (max, sum):
// two rounds of loads, none in a dependent chain (a loop over every planned split measured
// ~5.8 µs per call at batch 1 on an H200, this ~2).
template <typename T>
__device__ void combine_impl(const AttnArgs& a) {
  constexpr int kMaxSplits = 64, kEarly = 8;  // the host plans at most 64 splits
  __shared__ float s_w[kMaxSplits];
  __shared__ float s_total;
  const int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x & 31;
  TokenCtx ctx = token_ctx(a, t, false);
  if (ctx.kend > static_cast<int64_t>(a.splits) * a.split_len) ctx.kend = -1;
  // Bad metadata (reported by the decode kernel): no split to read, 0 / 0 = NaN rows.
  const int n = ctx.kend < 0 ? 0 : min(a.splits, token_splits(a, ctx.kend).n);
  grid_dep_wait();
  grid_dep_launch();
  const int64_t row = static_cast<int64_t>(t) * a.num_heads + h;
  const float* ml = reinterpret_cast<const float*>(a.part_ml) + row * a.splits * 2;
  const float* po = reinterpret_cast<const float*>(a.part_o) + row * a.splits * a.head_dim;
  const int d0 = threadIdx.x;  // one thread per output element: the host launches 128 ≥ head_dim
  float early[kEarly];
#pragma unroll
  for (int s = 0; s < kEarly; s++) early[s] = s < n && d0 < a.head_dim ? po[s * a.head_dim + d0] : 0.0f;
  if (threadIdx.x < 32) {
    // Lanes hold splits lane and lane + 32; an empty split (max −inf) weighs 0.
    float m0 = lane < n ? ml[2 * lane] : -INFINITY, m1 = lane + 32 < n ? ml[2 * (lane + 32)] : -INFINITY;
    const float l0 = lane < n ? ml[2 * lane + 1] : 0.0f, l1 = lane + 32 < n ? ml[2 * (lane + 32) + 1] : 0.0f;
    float mx = fmaxf(m0, m1);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float w0 = m0 == -INFINITY ? 0.0f : l0 * exp2f(m0 - mx);
    const float w1 = m1 == -INFINITY ? 0.0f : l1 * exp2f(m1 - mx);
    if (lane < n) s_w[lane] = w0;
    if (lane + 32 < n) s_w[lane + 32] = w1;
    float total = w0 + w1;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
    if (lane == 0) s_total = total;
  }
  __syncthreads();
  T* out = reinterpret_cast<T*>(a.out) + static_cast<int64_t>(t) * a.ld_out + h * a.head_dim;
  if (d0 >= a.head_dim) return;
  const float total = s_total;  // 0 when no split saw a key (bad metadata): 0/0 = NaN, as intended
  float acc = 0.0f;
#pragma unroll
  for (int s = 0; s < kEarly; s++) acc += s < n ? s_w[s] * early[s] : 0.0f;
#pragma unroll 8
  for (int s = kEarly; s < n; s++) acc += s_w[s] * po[s * a.head_dim + d0];
  out[d0] = from_f<T>(acc / total);
}

template <typename T>
__device__ void generic_impl(const AttnArgs& a) {
  __shared__ float qs[256], ps[kThreads], scratch[32];
  __shared__ int64_t koff[kThreads];
  const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x, hd = a.head_dim;
  const int g = h / (a.num_heads / a.num_kv_heads);
  const TokenCtx ctx = token_ctx(a, t, tid == 0 && h == 0);
  T* out = reinterpret_cast<T*>(a.out) + static_cast<int64_t>(t) * a.ld_out + h * hd;
  if (ctx.kend < 0) {
    for (int d = tid; d < hd; d += kThreads) out[d] = nan_of<T>();
    return;
  }
  const T* q = reinterpret_cast<const T*>(a.q) + static_cast<int64_t>(t) * a.ld_q + h * hd;
  for (int d = tid; d < hd; d += kThreads) qs[d] = to_f(q[d]);
  const int32_t* table = reinterpret_cast<const int32_t*>(a.block_tables) + static_cast<int64_t>(ctx.seq) * a.max_blocks;
  const T* kc = reinterpret_cast<const T*>(a.k_cache);
  const T* vc = reinterpret_cast<const T*>(a.v_cache);
  float acc0 = 0.0f, acc1 = 0.0f, m = -INFINITY, l = 0.0f;
  __syncthreads();
  for (int k0 = 0; k0 < ctx.kend; k0 += kThreads) {
    const int key = k0 + tid;
    float s = -INFINITY;
    int64_t off = -1;
    if (key < ctx.kend) {
      const int col = key / a.block_size;
      const int blk = table[col];
      if (blk < 0 || blk >= a.num_blocks) {
        report(a.err, kErrBlockId, ctx.seq, blk, a.num_blocks, col);
      } else {
        off = ((static_cast<int64_t>(blk) * a.block_size + key % a.block_size) * a.num_kv_heads + g) * hd;
        float dot = 0.0f;
        for (int d = 0; d < hd; d++) dot += qs[d] * to_f(kc[off + d]);
        s = dot * a.scale_log2;
      }
    }
    const float m_new = fmaxf(m, block_max(s, scratch));
    const float ref = m_new == -INFINITY ? 0.0f : m_new;
    const float corr = exp2f(m - ref);
    const float p = off >= 0 ? exp2f(s - ref) : 0.0f;
    ps[tid] = p;
    koff[tid] = off;
    l = l * corr + block_sum(p, scratch);  // its barriers also publish ps and koff
    acc0 *= corr;
    acc1 *= corr;
    const int n = min(kThreads, ctx.kend - k0);
    for (int j = 0; j < n; j++) {
      if (koff[j] < 0) continue;
      if (tid < hd) acc0 += ps[j] * to_f(vc[koff[j] + tid]);
      if (tid + kThreads < hd) acc1 += ps[j] * to_f(vc[koff[j] + tid + kThreads]);
    }
    m = m_new;
    __syncthreads();  // ps and koff are rewritten next round
  }
  if (tid < hd) out[tid] = from_f<T>(acc0 / l);
  if (tid + kThreads < hd) out[tid + kThreads] = from_f<T>(acc1 / l);
}

}  // namespace
}  // namespace xk

using xk::AttnArgs;

#define X_DECODE_KERNELS(SUF, T)                                                                         \
  extern "C" __global__ void __launch_bounds__(128) x_attn_decode_##SUF##_64(AttnArgs a) {              \
    xk::decode_impl<T, 64>(a);                                                                           \
  }                                                                                                      \
  extern "C" __global__ void __launch_bounds__(128) x_attn_decode_##SUF##_128(AttnArgs a) {             \
    xk::decode_impl<T, 128>(a);                                                                          \
  }                                                                                                      \
  extern "C" __global__ void __launch_bounds__(128, 16) x_attn_decode_lean_##SUF##_64(AttnArgs a) {     \
    xk::decode_lean_impl<T, 64>(a);                                                                      \
  }                                                                                                      \
  extern "C" __global__ void __launch_bounds__(128, 16) x_attn_decode_lean_##SUF##_128(AttnArgs a) {    \
    xk::decode_lean_impl<T, 128>(a);                                                                     \
  }                                                                                                      \
  extern "C" __global__ void x_attn_combine_##SUF(AttnArgs a) { xk::combine_impl<T>(a); }               \
  extern "C" __global__ void __launch_bounds__(128) x_attn_generic_##SUF(AttnArgs a) { xk::generic_impl<T>(a); }

X_DECODE_KERNELS(bf16, __nv_bfloat16)
X_DECODE_KERNELS(f16, __half)
