// Paged attention for prefill (variable-length, causal, GQA): flash-attention-2 style on tensor
// cores. A block owns 64 query rows of one sequence and one query head (4 warps × 16 rows); it
// walks the sequence's keys up to its last row's position in tiles of 64, double-buffered in
// shared memory with cp.async, keeping running max/sum/output in registers (f32).
//
// Grid: x = query head (adjacent blocks share a KV head, so K/V tiles are reused from L2),
// y = tile slot. Slots are numbered over all sequences (sum of ceil(qlen / 64)); the host launches
// ceil(T / 64) + B slots, an upper bound, and blocks past the last tile exit.
#include "attention.cuh"

namespace xk {
namespace {

constexpr int kBM = 64, kBN = 64, kThreads = 128;

// Warp 0: maps tile slot `slot` to (sequence, tile). Reports bad queryStartLoc entries once.
__device__ void find_tile(const AttnArgs& a, int slot, int* seq_out, int* tile_out) {
  const int lane = threadIdx.x & 31;
  const int32_t* qsl = reinterpret_cast<const int32_t*>(a.qsl);
  if (lane == 0 && blockIdx.x == 0 && slot == 0 && (qsl[0] != 0 || qsl[a.num_seqs] != a.tokens)) {
    report(a.err, kErrQueryStartLoc, qsl[0] != 0 ? 0 : a.num_seqs, qsl[0] != 0 ? qsl[0] : qsl[a.num_seqs],
           a.tokens);
  }
  int base = 0;
  for (int b0 = 0; b0 < a.num_seqs; b0 += 32) {
    const int b = b0 + lane;
    int n = 0;
    if (b < a.num_seqs) {
      const int len = qsl[b + 1] - qsl[b];
      if (len < 0 && blockIdx.x == 0 && slot == 0) report(a.err, kErrQueryStartLoc, b + 1, qsl[b + 1], qsl[b]);
      n = len > 0 ? (len + kBM - 1) / kBM : 0;
    }
    int incl = n;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    const int excl = incl - n;
    const bool hit = n > 0 && slot >= base + excl && slot < base + incl;
    const unsigned m = __ballot_sync(0xffffffffu, hit);
    if (m != 0) {
      if (lane == __ffs(m) - 1) {
        *seq_out = b;
        *tile_out = slot - base - excl;
      }
      return;
    }
    base += __shfl_sync(0xffffffffu, incl, 31);
  }
  if (lane == 0) *seq_out = -1;
}

template <typename T, int HD>
__device__ void prefill_impl(const AttnArgs& a) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int NO = HD / 8;             // output n-tiles
  constexpr int TILE = kBN * HD * 2;     // bytes of one K or V tile
  __shared__ int s_seq, s_tile;
  const int h = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (warp == 0) find_tile(a, blockIdx.y, &s_seq, &s_tile);
  __syncthreads();
  const int b = s_seq;
  if (b < 0) return;
  const int32_t* qsl = reinterpret_cast<const int32_t*>(a.qsl);
  const int q_begin = qsl[b], qlen = qsl[b + 1] - q_begin;
  const int seq_len = reinterpret_cast<const int32_t*>(a.seq_lens)[b];
  const int row0 = s_tile * kBM;
  // Rows past the end of q (a bad queryStartLoc, already reported) are never touched.
  const int valid_rows = min(min(kBM, qlen - row0), a.tokens - (q_begin + row0));
  if (valid_rows <= 0 || q_begin < 0) return;
  T* out = reinterpret_cast<T*>(a.out) + static_cast<int64_t>(q_begin + row0) * a.ld_out + h * HD;
  const int cap = a.max_blocks * a.block_size;
  if (seq_len < qlen || seq_len > cap) {
    if (h == 0 && s_tile == 0 && threadIdx.x == 0) report(a.err, kErrSeqLen, b, seq_len, cap, qlen);
    for (int i = threadIdx.x; i < valid_rows * HD; i += kThreads) out[(i / HD) * a.ld_out + i % HD] = nan_of<T>();
    return;
  }
  const int g = h / (a.num_heads / a.num_kv_heads);
  const int pos_first = seq_len - qlen + row0;  // position of the tile's row 0
  const int kend = pos_first + valid_rows;      // keys [0, kend) cover the tile's last row
  const int n_tiles = (kend + kBN - 1) / kBN;
  const TableView table = make_table_view(
      a, reinterpret_cast<const int32_t*>(a.block_tables) + static_cast<int64_t>(b) * a.max_blocks);

  const uint32_t q_tile = smem_u32(smem);
  const uint32_t kv0 = q_tile + kBM * HD * 2;  // stage s: K at kv0 + 2s·TILE, V right after
  const T* q = reinterpret_cast<const T*>(a.q) + static_cast<int64_t>(q_begin + row0) * a.ld_q + h * HD;
  load_rows<T, HD, kBM, kThreads>(q_tile, q, a.ld_q, valid_rows);
  load_kv_tile<T, HD, kBN, kThreads>(kv0, kv0 + TILE, a, table, b, 0, kend, g);
  cp_async_commit();

  uint32_t qf[HD / 16][4];
  float o[NO][4];
#pragma unroll
  for (int n = 0; n < NO; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int r_lo = warp * 16 + (lane >> 2);
  const int pos_lo = pos_first + r_lo, pos_hi = pos_lo + 8;

  for (int j = 0; j < n_tiles; j++) {
    cp_async_wait<0>();
    __syncthreads();  // tile j landed for everyone; everyone finished tile j-1
    if (j == 0) load_a_frags<HD>(qf, q_tile, warp * 16);
    if (j + 1 < n_tiles) {
      const uint32_t st = kv0 + ((j + 1) & 1) * 2 * TILE;
      load_kv_tile<T, HD, kBN, kThreads>(st, st + TILE, a, table, b, (j + 1) * kBN, kend, g);
      cp_async_commit();
    }
    const uint32_t k_tile = kv0 + (j & 1) * 2 * TILE, v_tile = k_tile + TILE;
    float s[kBN / 8][4];
    qk<T, HD, kBN / 8>(s, qf, k_tile, 0);
    const int key0 = j * kBN;
    const bool diagonal = key0 + kBN - 1 > pos_first;  // some key of this tile is in some row's future
#pragma unroll
    for (int n = 0; n < kBN / 8; n++) {
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const int key = key0 + n * 8 + (lane & 3) * 2 + e;
        s[n][e] = diagonal && key > pos_lo ? -INFINITY : s[n][e] * a.scale_log2;
        s[n][2 + e] = diagonal && key > pos_hi ? -INFINITY : s[n][2 + e] * a.scale_log2;
      }
    }
    softmax_step<kBN / 8, NO>(s, m, l, o);
    pv<T, HD, kBN / 16>(o, s, v_tile, 0);
  }

#pragma unroll
  for (int half = 0; half < 2; half++) {
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 1);
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 2);
  }
  const float inv_lo = 1.0f / l[0], inv_hi = 1.0f / l[1];
#pragma unroll
  for (int n = 0; n < NO; n++) {
    const int col = n * 8 + (lane & 3) * 2;
    if (r_lo < valid_rows) {
      *reinterpret_cast<uint32_t*>(out + r_lo * a.ld_out + col) = pack2<T>(o[n][0] * inv_lo, o[n][1] * inv_lo);
    }
    if (r_lo + 8 < valid_rows) {
      *reinterpret_cast<uint32_t*>(out + (r_lo + 8) * a.ld_out + col) =
          pack2<T>(o[n][2] * inv_hi, o[n][3] * inv_hi);
    }
  }
}

}  // namespace
}  // namespace xk

using xk::AttnArgs;

extern "C" __global__ void __launch_bounds__(128) x_attn_prefill_bf16_64(AttnArgs a) {
  xk::prefill_impl<__nv_bfloat16, 64>(a);
}
extern "C" __global__ void __launch_bounds__(128) x_attn_prefill_bf16_128(AttnArgs a) {
  xk::prefill_impl<__nv_bfloat16, 128>(a);
}
extern "C" __global__ void __launch_bounds__(128) x_attn_prefill_f16_64(AttnArgs a) {
  xk::prefill_impl<__half, 64>(a);
}
extern "C" __global__ void __launch_bounds__(128) x_attn_prefill_f16_128(AttnArgs a) {
  xk::prefill_impl<__half, 128>(a);
}
