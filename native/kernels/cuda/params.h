// Kernel arguments of @x/kernels' CUDA kernels, shared by the host launch code (g++) and the kernels
// (nvcc). Each kernel takes one of these structs by value; addresses are device (or UVA host)
// addresses. Plain C++ so both compilers lay the structs out identically (x86-64 ABI).
#pragma once

#include <stdint.h>

namespace xk {

enum DType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

// The first data-dependent error a kernel met on a device (a bad id, slot, position or block
// table entry). Kernels never touch memory through a bad index: they skip it (or write NaN) and
// record it here with atomicCAS on `code`; checkKernelErrors() reads and clears it.
struct ErrorWord {
  int32_t code;   // 0: none; otherwise the ErrOp
  int32_t pad;
  int64_t index;  // the offending element
  int64_t value;  // its value
  int64_t limit;  // the valid range is [lo, limit) (lo per op, see ops.cc)
  int64_t aux;    // a second index where useful (e.g. the block-table column)
};

enum ErrOp : int32_t {
  kErrEmbeddingId = 1,
  kErrRotaryPosition = 2,
  kErrSlot = 3,
  kErrQueryStartLoc = 4,
  kErrSeqLen = 5,
  kErrBlockId = 6,
};

struct EmbeddingArgs {
  uint64_t out, table, ids;  // out [T, H], table [V, H], ids i32 [T]
  int64_t tokens, hidden, ld_out, ld_table, vocab;
  uint64_t err;
};

struct RmsNormArgs {
  uint64_t out, x, residual, weight;  // residual 0: none
  int64_t rows, cols, ld_out, ld_x, ld_res;
  float eps;
};

struct RotaryArgs {
  uint64_t positions;  // i32 or i64 [T]
  int32_t pos_i64, neox;
  uint64_t q, k;  // k 0: none
  int64_t tokens, ld_q, ld_k, nq, nk, head_dim, rot, max_pos;
  uint64_t cos_sin;  // f32 [max_pos, rot]: cos in the first half of a row, sin in the second
  // Fused KV write (k_cache 0: none): rotated k and v go to slot slots[t] of the paged cache.
  uint64_t v, k_cache, v_cache, slots;
  int64_t ld_v, num_slots;
  uint64_t err;
};

struct SiluArgs {
  uint64_t out, x;  // out [T, I], x [T, 2I]
  int64_t rows, cols, ld_out, ld_x;
};

struct CacheWriteArgs {
  uint64_t k, v, k_cache, v_cache, slots;  // slots i64 [T]; -1 skips the token
  int64_t tokens, width, ld_k, ld_v, num_slots;
  uint64_t err;
};

// Paged attention over caches [num_blocks, block_size, num_kv_heads, head_dim].
struct AttnArgs {
  uint64_t out, q, k_cache, v_cache;
  uint64_t block_tables, seq_lens, qsl;  // i32 [B, max_blocks], [B], [B+1]
  uint64_t part_o, part_ml;  // split-KV partials (f32): [T, nq, splits, hd] and [T, nq, splits, 2]
  int64_t ld_q, ld_out;
  int32_t tokens, num_seqs, num_heads, num_kv_heads, head_dim, block_size, num_blocks, max_blocks;
  int32_t splits, split_len, head_chunks, tile_slots;
  float scale_log2;  // softmax scale · log2(e): scores are exponentiated with exp2
  uint64_t err;
  // Split-KV arrival counters, u32 [tokens · num_kv_heads · head_chunks], zero between calls (each
  // call leaves them zero): the last split of a (token, head chunk) to finish merges the partials
  // itself. 0: a separate combine kernel merges them.
  uint64_t counters;
  // Decode: no split of a token's keys is shorter than this (whole key tiles; the host plans 64
  // when the batch alone leaves most of the GPU idle, else 256). 0 reads as 256.
  int32_t min_split_keys;
  // Decode: 1 when the metadata (block tables, sequence lengths, query starts) is not an output of
  // the kernel enqueued right before this one (the host uploaded it, or an earlier kernel wrote
  // it): the decode kernel then reads it while that kernel drains, before its grid_dep_wait.
  int32_t host_metadata;
  // Decode, with host_metadata: 1 when the cached keys and values before each sequence's query
  // tokens are not outputs of the kernel enqueued right before this one (only this call's tokens'
  // rows are, e.g. written by the qkv projection): the lean decode kernel then copies them before
  // its grid_dep_wait too.
  int32_t early_keys;
};

// Small-batch linear (x_gemv_*): out = epilogue(prologue(x) · wᵀ + bias) for 1..kGemvMaxRows rows
// of x — the decode step of a few sequences, where a linear layer is a stream over its weights.
// prologue: with norm_w, each row of x is RMS-normalized first (as rms_norm with that weight; its
// 1 / rms scales the dot products, so the normalized row is not rounded to T in between).
// Each output pair (unit) is one warp's; what a unit is depends on the mode:
//   kGemvStore      rows 2u, 2u+1 of w -> out[:, r] (T, or f32 with out_f32)
//   kGemvResidual   out[:, r] = out[:, r] + y (out is the residual stream, T)
//   kGemvSiluMul    w is [gate; up] (2n rows): out[:, u] = silu(gate_u) · up_u, u < n
//   kGemvRotary     w is q|k|v heads ((nq + 2 nk) · head_dim rows): rotary on the q and k heads
//                   (pairs (i, i + hd/2) with neox, (2i, 2i + 1) without), all heads to out, k and
//                   v heads also to slot slots[m] of the paged caches (slot -1 skipped).
enum GemvMode : int32_t { kGemvStore = 0, kGemvResidual = 1, kGemvSiluMul = 2, kGemvRotary = 3 };
constexpr int kGemvMaxRows = 4;
struct GemvArgs {
  uint64_t out, x, w, bias, norm_w;  // bias [rows of w] (T) or 0; norm_w [k] (T) or 0
  int64_t m, n, k, ld_out, ld_x;     // n: output columns (kGemvSiluMul: half the rows of w)
  int64_t units;                     // units of work (set by the host, see GemvMode)
  int32_t split;                     // warps sharing a unit (split-K over k; 1, 2, 4 or 8)
  int32_t preload;                   // bit 0: load the first weights before waiting for the previous
                                     // kernel; bit 1: load bias and residual in the epilogue (late)
  int32_t mode, out_f32;
  float eps;
  int32_t pos_i64;
  // kGemvRotary
  uint64_t positions, cos_sin, k_cache, v_cache, slots;  // cos_sin f32 [max_pos, head_dim]
  int32_t neox, num_heads, num_kv_heads, pad;
  int64_t head_dim, max_pos, num_slots;
  uint64_t err;
};

// dst[dst_index[k]] = src[src_index[k]] for k < n, 4-byte elements (token ids fed back from the
// sampler into the next step's inputs). Indices travel by value: the host checked them.
constexpr int kIndexCopyMax = 256;
struct IndexCopyArgs {
  uint64_t dst, src;
  int32_t n, pad;
  int32_t dst_index[kIndexCopyMax];
  int32_t src_index[kIndexCopyMax];
};

// dst[w] = src[w] for every 4-byte word w < words, except the words named in dst_word (sorted, all
// inside the copy, each in [lo, hi]): those take feed[src_index[k]] instead. Either side may be
// pinned host memory (a step's staged inputs, the ids the sampler wrote to the host). Pairs beyond
// kIndexCopyMax follow as IndexCopyArgs launches.
struct CopyIndexedArgs {
  uint64_t dst, src, feed;
  int64_t words;
  int32_t n, lo, hi, pad;
  int32_t dst_word[kIndexCopyMax];
  int32_t src_index[kIndexCopyMax];
};

// One row of a sampling batch as packed by the TS layer (SAMPLE_ROW_BYTES = 80 there).
struct SampleRowParams {
  float temperature, top_p, min_p, repetition, presence, frequency;
  int32_t top_k, flags;
  uint64_t seed, step;
  int32_t prompt_off, prompt_n, output_off, output_n, bias_off, bias_n, suppress_off, suppress_n;
};

struct SampleArgs {
  uint64_t logits;  // [B, V] f32 or bf16 or f16, rows ld apart
  int64_t ld, vocab;
  int32_t rows, num_top, logits_dtype, pad;
  uint64_t params;   // SampleRowParams [B] (pinned host memory, read through UVA)
  uint64_t ids;      // i32 pool the rows' offsets index (pinned host memory)
  uint64_t bias;     // f32 values parallel to the bias ids in the pool
  uint64_t work;     // workspace: per row V f32 (processed logits) + V u32 (token counts)
  uint64_t sampled, sampled_logprob, sampled_rank, top_ids, top_logprobs;  // 0: not wanted
  // Raw-row statistics of each kSampleChunk-logit chunk (x_sample_stats, before the sampler):
  // SampleChunkStats [B, chunks], 16-byte aligned, in the workspace after the rows.
  uint64_t stats;
  int32_t chunks, pad2;
};

// Logits per chunk of a row the statistics kernel gives one block (256 threads × 8).
constexpr int kSampleChunk = 2048;
struct SampleChunkStats {
  float max;  // the chunk's largest logit (NaN skipped; -inf when none)
  float sum;  // Σ exp(x − max) over the chunk (NaN if a logit is NaN)
  int32_t index;  // the smallest index holding max (INT32_MAX when max is -inf)
  int32_t pad;
};

}  // namespace xk
