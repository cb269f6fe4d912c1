// Building blocks of the tensor-core attention kernels (sm_80+: mma.sync m16n8k16, ldmatrix; the
// cp.async helpers are in common.cuh). Shared-memory tiles hold rows of HD 16-bit elements as
// 16-byte chunks, chunk c of row r stored at chunk (c ^ (r & 7)) so that the 8 row addresses of
// one ldmatrix hit 8 different bank groups (needs HD >= 64). Softmax runs in base 2: scores are
// pre-multiplied by log2(e).
#pragma once

#include "common.cuh"

namespace xk {

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a · b for one 16x8 tile (f32 accumulators; a: 16x16 row-major, b: 16x8 "col").
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Byte offset of chunk `c` (8 elements) of row `r` in a swizzled tile of HD-element rows.
template <int HD>
__device__ __forceinline__ uint32_t tile_off(int r, int c) {
  return static_cast<uint32_t>((r * HD + ((c ^ (r & 7)) << 3)) * 2);
}

// Loads keys [key0, key0 + ROWS) of kv head g into K and V tiles through the block table; keys at
// or past `kend` (and keys behind a bad block id, which is reported) become zero rows.
// Block-table lookups of one block's keys: from a shared-memory copy of the columns it covers
// (`cached` entries starting at column `col0`, bad ids already reported and stored as -1), else
// from global memory. Division by the block size is a shift when it is a power of two.
struct TableView {
  const int32_t* table;  // this sequence's row of the global block table
  const int32_t* cached;  // shared copy or null
  int col0, n_cached, shift, mask;
};

__device__ __forceinline__ TableView make_table_view(const AttnArgs& a, const int32_t* table) {
  const int bs = a.block_size;
  const bool pow2 = (bs & (bs - 1)) == 0;
  return {table, nullptr, 0, 0, pow2 ? __ffs(bs) - 1 : -1, bs - 1};
}

// Copies the 16-byte chunk c of key `key` (row r of the K and V tiles) when `valid`, else zeros;
// a key behind a bad block id becomes a zero row too (reported unless the cached table already did).
template <typename T, int HD>
__device__ __forceinline__ void copy_kv_chunk(uint32_t k_tile, uint32_t v_tile, const T* kc, const T* vc,
                                              const AttnArgs& a, const TableView& tv, int seq, int key, int r, int c,
                                              bool valid, int g) {
  int64_t off = 0;
  if (valid) {
    const int col = tv.shift >= 0 ? key >> tv.shift : key / a.block_size;
    const int within = tv.shift >= 0 ? key & tv.mask : key % a.block_size;
    const bool hit = tv.cached != nullptr && col >= tv.col0 && col < tv.col0 + tv.n_cached;
    const int blk = hit ? tv.cached[col - tv.col0] : tv.table[col];
    if (blk < 0 || blk >= a.num_blocks) {
      if (!hit) report(a.err, kErrBlockId, seq, blk, a.num_blocks, col);
      valid = false;
    } else {
      off = ((static_cast<int64_t>(blk) * a.block_size + within) * a.num_kv_heads + g) * HD + c * 8;
    }
  }
  const uint32_t o = tile_off<HD>(r, c);
  cp_async16(k_tile + o, kc + off, valid);
  cp_async16(v_tile + o, vc + off, valid);
}

template <typename T, int HD, int ROWS, int NT>
__device__ __forceinline__ void load_kv_tile(uint32_t k_tile, uint32_t v_tile, const AttnArgs& a,
                                             const TableView& tv, int seq, int key0, int kend, int g) {
  constexpr int CH = HD / 8;
  static_assert((ROWS * CH) % NT == 0, "tile chunks must divide among the threads");
  const T* kc = reinterpret_cast<const T*>(a.k_cache);
  const T* vc = reinterpret_cast<const T*>(a.v_cache);
#pragma unroll
  for (int it = 0; it < ROWS * CH / NT; it++) {
    const int i = static_cast<int>(threadIdx.x) + it * NT;
    const int r = i / CH, c = i % CH;
    const int key = key0 + r;
    copy_kv_chunk<T, HD>(k_tile, v_tile, kc, vc, a, tv, seq, key, r, c, key < kend, g);
  }
}

// The block-table columns of keys [k_begin, k_stop) copied into `cache` (at most CAP entries; bad
// ids reported once and stored as -1) by NT threads, so that tile loads do not wait on the table;
// more columns than CAP stay in global memory. The caller synchronizes before the view is used.
template <int CAP, int NT>
__device__ __forceinline__ void cache_table(TableView& table, int32_t* cache, const AttnArgs& a, const int32_t* row,
                                            int seq, int k_begin, int k_stop) {
  const int c0 = k_begin / a.block_size, c1 = (k_stop - 1) / a.block_size + 1;
  if (c1 - c0 > CAP) return;
  for (int c = threadIdx.x; c < c1 - c0; c += NT) {
    const int blk = row[c0 + c];
    const bool bad = blk < 0 || blk >= a.num_blocks;
    if (bad) report(a.err, kErrBlockId, seq, blk, a.num_blocks, c0 + c);
    cache[c] = bad ? -1 : blk;
  }
  table.cached = cache;
  table.col0 = c0;
  table.n_cached = c1 - c0;
}

// Loads `rows_valid` rows of HD elements (row r at src + r * ld) into a swizzled tile of ROWS rows;
// the other rows become zeros.
template <typename T, int HD, int ROWS, int NT>
__device__ __forceinline__ void load_rows(uint32_t tile, const T* src, int64_t ld, int rows_valid) {
  constexpr int CH = HD / 8;
  for (int i = threadIdx.x; i < ROWS * CH; i += NT) {
    const int r = i / CH, c = i % CH;
    const bool valid = r < rows_valid;
    cp_async16(tile + tile_off<HD>(r, c), valid ? src + r * ld + c * 8 : src, valid);
  }
}

// The A fragments of a warp's 16 rows (rows row0..row0+15 of a swizzled tile), one per k-step.
template <int HD>
__device__ __forceinline__ void load_a_frags(uint32_t (&qf)[HD / 16][4], uint32_t tile, int row0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int ks = 0; ks < HD / 16; ks++) {
    ldmatrix_x4(qf[ks], tile + tile_off<HD>(row0 + (lane & 15), ks * 2 + (lane >> 4)));
  }
}

// s[n] (n-tiles of 8 keys, keys key_row0 + 8n ...) += Q · Kᵀ over HD, NT8 n-tiles (even).
template <typename T, int HD, int NT8>
__device__ __forceinline__ void qk(float (&s)[NT8][4], const uint32_t (&qf)[HD / 16][4], uint32_t k_tile,
                                   int key_row0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < NT8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < HD / 16; ks++) {
#pragma unroll
    for (int np = 0; np < NT8 / 2; np++) {
      uint32_t b[4];
      const int row = key_row0 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
      ldmatrix_x4(b, k_tile + tile_off<HD>(row, ks * 2 + ((lane >> 3) & 1)));
      mma16816<T>(s[2 * np], qf[ks], b[0], b[1]);
      mma16816<T>(s[2 * np + 1], qf[ks], b[2], b[3]);
    }
  }
}

// o (HD/8 n-tiles) += P · V for the keys key_row0 .. key_row0 + 16·KSTEPS of the V tile; P comes
// from the score accumulators (already exponentiated), 2 n-tiles per k-step.
template <typename T, int HD, int KSTEPS>
__device__ __forceinline__ void pv(float (&o)[HD / 8][4], const float (&p)[2 * KSTEPS][4], uint32_t v_tile,
                                   int key_row0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int kk = 0; kk < KSTEPS; kk++) {
    const uint32_t a[4] = {pack2<T>(p[2 * kk][0], p[2 * kk][1]), pack2<T>(p[2 * kk][2], p[2 * kk][3]),
                           pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                           pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3])};
    const int row = key_row0 + kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
#pragma unroll
    for (int dp = 0; dp < HD / 16; dp++) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, v_tile + tile_off<HD>(row, dp * 2 + (lane >> 4)));
      mma16816<T>(o[2 * dp], a, b[0], b[1]);
      mma16816<T>(o[2 * dp + 1], a, b[2], b[3]);
    }
  }
}

// Online-softmax step for a thread's two rows (lo: c[0..1], hi: c[2..3]) of NT8 score tiles that
// are already scaled (log2 domain) and masked (-inf). Updates m/l, rescales o, exponentiates s.
template <int NT8, int NO>
__device__ __forceinline__ void softmax_step(float (&s)[NT8][4], float (&m)[2], float (&l)[2],
                                             float (&o)[NO][4]) {
#pragma unroll
  for (int half = 0; half < 2; half++) {
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < NT8; n++) mx = fmaxf(mx, fmaxf(s[n][2 * half], s[n][2 * half + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m[half], mx);
    const float ref = m_new == -INFINITY ? 0.0f : m_new;  // all masked so far: avoid inf - inf
    const float corr = exp2f(m[half] - ref);
    float sum = 0.0f;
#pragma unroll
    for (int n = 0; n < NT8; n++) {
      s[n][2 * half] = exp2f(s[n][2 * half] - ref);
      s[n][2 * half + 1] = exp2f(s[n][2 * half + 1] - ref);
      sum += s[n][2 * half] + s[n][2 * half + 1];
    }
    l[half] = l[half] * corr + sum;  // per-thread partial; the 4 lanes of a row add up at the end
    m[half] = m_new;
#pragma unroll
    for (int n = 0; n < NO; n++) {
      o[n][2 * half] *= corr;
      o[n][2 * half + 1] *= corr;
    }
  }
}

// The sequence owning query token t: the largest b with qsl[b] <= t. A pure decode batch (one
// token per sequence, qsl = 0, 1, 2, ...) is recognized with two independent loads instead of a
// chain of dependent ones.
__device__ __forceinline__ int seq_of_token(const int32_t* qsl, int num_seqs, int t) {
  if (t < num_seqs && qsl[t] == t && qsl[t + 1] == t + 1) return t;
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (qsl[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

}  // namespace xk
