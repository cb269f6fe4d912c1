#include "ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace x::kernels::gpu {
namespace {

const char* suffix(int dtype) { return dtype == xk::kF16 ? "f16" : "bf16"; }
bool aligned16(uint64_t p) { return (p & 15) == 0; }
unsigned round32(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(1024, std::max<int64_t>(32, (n + 31) / 32 * 32))); }
unsigned ceil_div(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

Status run(const DeviceRuntime& rt, cuda::CUstream s, const std::string& name, Dim3 grid, Dim3 block, unsigned smem,
           void* args, bool pdl = false, int carveout = -1) {
  return rt.launch(name.c_str(), grid, block, smem, s, args, pdl, carveout);
}

}  // namespace

Status launch_embedding(const DeviceRuntime& rt, cuda::CUstream s, int dtype, const xk::EmbeddingArgs& a) {
  const bool vec = a.hidden % 8 == 0 && a.ld_out % 8 == 0 && a.ld_table % 8 == 0 && aligned16(a.out) && aligned16(a.table);
  xk::EmbeddingArgs args = a;
  const std::string name = std::string("x_embedding_") + suffix(dtype) + (vec ? "_v" : "_s");
  return run(rt, s, name, {static_cast<unsigned>(a.tokens)}, {round32(vec ? a.hidden / 8 : a.hidden) > 256 ? 256u : round32(vec ? a.hidden / 8 : a.hidden)}, 0, &args);
}

Status launch_rms_norm(const DeviceRuntime& rt, cuda::CUstream s, int dtype, const xk::RmsNormArgs& a) {
  xk::RmsNormArgs args = a;
  const bool vec = a.cols % 8 == 0 && a.ld_x % 8 == 0 && a.ld_out % 8 == 0 && aligned16(a.x) && aligned16(a.out) &&
                   aligned16(a.weight) && (a.residual == 0 || (a.ld_res % 8 == 0 && aligned16(a.residual)));
  const int64_t nvec = a.cols / 8;
  const std::string base = std::string("x_rms_norm_") + suffix(dtype);
  if (vec && nvec <= 128) {
    // One warp per row, four rows per block.
    const int vpt = nvec <= 32 ? 1 : nvec <= 64 ? 2 : 4;
    return run(rt, s, base + "_w" + std::to_string(vpt), {ceil_div(a.rows, 4)}, {128}, 0, &args);
  }
  if (vec && nvec <= 8192) {
    const int vpt = nvec <= 4096 ? 4 : 8;
    return run(rt, s, base + "_b" + std::to_string(vpt), {static_cast<unsigned>(a.rows)}, {round32(ceil_div(nvec, vpt))}, 0,
               &args);
  }
  return run(rt, s, base + "_s", {static_cast<unsigned>(a.rows)}, {std::min(1024u, round32(a.cols))}, 0, &args);
}

Status launch_rotary(const DeviceRuntime& rt, cuda::CUstream s, int dtype, const xk::RotaryArgs& a) {
  xk::RotaryArgs args = a;
  const int64_t half = a.rot / 2;
  bool vec = a.neox && half % 8 == 0 && a.head_dim % 8 == 0 && a.ld_q % 8 == 0 && aligned16(a.q) &&
             aligned16(a.cos_sin) && a.rot % 4 == 0;
  if (a.k != 0) vec = vec && a.ld_k % 8 == 0 && aligned16(a.k);
  if (a.k_cache != 0) vec = vec && a.ld_v % 8 == 0 && aligned16(a.v) && aligned16(a.k_cache) && aligned16(a.v_cache);
  const std::string name = std::string("x_rotary_") + suffix(dtype) + (vec ? "_v" : "_s");
  return run(rt, s, name, {static_cast<unsigned>(a.tokens)}, {128}, 0, &args);
}

Status launch_silu_and_mul(const DeviceRuntime& rt, cuda::CUstream s, int dtype, const xk::SiluArgs& a) {
  xk::SiluArgs args = a;
  const bool vec = a.cols % 8 == 0 && a.ld_x % 8 == 0 && a.ld_out % 8 == 0 && aligned16(a.x) && aligned16(a.out);
  const int64_t items = a.rows * (vec ? a.cols / 8 : a.cols);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(items, 256), int64_t{rt.multiprocessors()} * 16));
  const std::string name = std::string("x_silu_and_mul_") + suffix(dtype) + (vec ? "_v" : "_s");
  return run(rt, s, name, {std::max(1u, blocks)}, {256}, 0, &args);
}

Status launch_cache_write(const DeviceRuntime& rt, cuda::CUstream s, int dtype, const xk::CacheWriteArgs& a) {
  xk::CacheWriteArgs args = a;
  const bool vec = a.width % 8 == 0 && a.ld_k % 8 == 0 && a.ld_v % 8 == 0 && aligned16(a.k) && aligned16(a.v) &&
                   aligned16(a.k_cache) && aligned16(a.v_cache);
  const std::string name = std::string("x_cache_write_") + suffix(dtype) + (vec ? "_v" : "_s");
  return run(rt, s, name, {static_cast<unsigned>(a.tokens)}, {128}, 0, &args);
}

Status launch_index_copy(const DeviceRuntime& rt, cuda::CUstream s, const xk::IndexCopyArgs& a) {
  if (a.n <= 0) return Status::Ok();
  xk::IndexCopyArgs args = a;
  return run(rt, s, "x_index_copy_u32", {1}, {static_cast<unsigned>(xk::kIndexCopyMax)}, 0, &args);
}

Status launch_copy_indexed(const DeviceRuntime& rt, cuda::CUstream s, const xk::CopyIndexedArgs& a) {
  if (a.words <= 0) return Status::Ok();
  xk::CopyIndexedArgs args = a;
  // Small copies (a decode step's inputs: a few KB) are bound by the host link's latency, large
  // ones by its bandwidth: enough blocks to keep many reads in flight, one word per thread.
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(a.words, 256), int64_t{rt.multiprocessors()} * 4));
  return run(rt, s, "x_copy_indexed_u32", {std::max(1u, blocks)}, {256}, 0, &args);
}

namespace {
constexpr int kPrefillRows = 64, kKeyTile = 64;
unsigned prefill_smem(int hd) { return static_cast<unsigned>(kPrefillRows * hd * 2 + 2 * 2 * kKeyTile * hd * 2); }
unsigned decode_smem(int hd) { return static_cast<unsigned>(16 * hd * 2 + 3 * 2 * kKeyTile * hd * 2); }
unsigned lean_smem(int hd) { return static_cast<unsigned>(8 * hd * 2 + 2 * kKeyTile * hd * 2); }
// Tuning knobs (read once, for benchmarks): a non-negative integer from the environment.
int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  return end != nullptr && *end == '\0' && n >= 0 ? n : fallback;
}
uint64_t partial_bytes(const xk::AttnArgs& a, int splits) {
  const uint64_t rows = static_cast<uint64_t>(a.tokens) * a.num_heads * splits;
  return (rows * a.head_dim * 4 + 255) / 256 * 256 + rows * 2 * 4;
}
}  // namespace

AttnPlan plan_attention(const DeviceRuntime& rt, const xk::AttnArgs& a, int64_t max_ctx, int decode,
                        uint64_t workspace_bytes, bool aligned) {
  AttnPlan p;
  const bool mma_dim = a.head_dim == 64 || a.head_dim == 128;
  const int smem_max = rt.max_dynamic_smem();
  const bool is_decode = decode >= 0 ? decode == 1 : static_cast<int64_t>(a.tokens) <= 2 * static_cast<int64_t>(a.num_seqs);
  if (!mma_dim || !aligned) return p;  // generic
  if (!is_decode) {
    if (static_cast<int>(prefill_smem(a.head_dim)) > smem_max) return p;
    p.kind = AttnPlan::kPrefill;
    return p;
  }
  if (static_cast<int>(decode_smem(a.head_dim)) > smem_max) return p;
  p.kind = AttnPlan::kDecode;
  // Split the context when the batch alone gives too few blocks for the GPU: at least two waves of
  // resident blocks (two per SM), and a split count whose last wave is nearly full (a wave that is
  // 20% full costs as long as a full one). Splits shorter than 256 keys are not worth their merge,
  // unless the batch alone leaves most of the GPU idle.
  const int group = a.num_heads / a.num_kv_heads;
  const int64_t blocks = static_cast<int64_t>(a.tokens) * a.num_kv_heads * ((group + 15) / 16);
  const int64_t resident = int64_t{2} * rt.multiprocessors();
  const int64_t cap = int64_t{a.max_blocks} * a.block_size;
  const int64_t ctx = std::max<int64_t>(1, max_ctx > 0 ? std::min(max_ctx, cap) : cap);
  // A batch that leaves most multiprocessors idle splits down to one key tile per block.
  // (X_ATTN_SPLIT_KEYS, a multiple of 64, overrides the shortest split: a tuning knob.)
  static const int64_t split_keys = env_int("X_ATTN_SPLIT_KEYS", 0);
  p.min_split_keys = blocks * 4 <= rt.multiprocessors() ? kKeyTile : 256;
  if (split_keys > 0 && split_keys % kKeyTile == 0) p.min_split_keys = static_cast<int32_t>(split_keys);
  const int64_t most = std::min<int64_t>((ctx + p.min_split_keys - 1) / p.min_split_keys, 64);
  int splits = static_cast<int>(std::clamp<int64_t>((2 * resident + blocks - 1) / blocks, 1, std::max<int64_t>(1, most)));
  auto fullness = [&](int64_t s) {
    const double waves = static_cast<double>(blocks * s) / static_cast<double>(resident);
    return waves / std::ceil(waves);
  };
  for (int64_t s = splits; s <= most; s++) {
    if (fullness(s) >= 0.95) {
      splits = static_cast<int>(s);
      break;
    }
  }
  while (splits > 1 && partial_bytes(a, splits) > workspace_bytes) splits--;
  if (splits > 1) {
    p.split_len = static_cast<int>(((ctx + splits - 1) / splits + kKeyTile - 1) / kKeyTile * kKeyTile);
    splits = static_cast<int>((ctx + p.split_len - 1) / p.split_len);
  }
  p.splits = splits;
  // One split covers every key the block table can address.
  if (splits == 1) p.split_len = static_cast<int>(int64_t{a.max_blocks} * a.block_size + kKeyTile);
  p.workspace_bytes = splits > 1 ? partial_bytes(a, splits) : 0;
  return p;
}

Status launch_attention(const DeviceRuntime& rt, cuda::CUstream s, int dtype, xk::AttnArgs a, const AttnPlan& plan,
                        uint64_t workspace) {
  const std::string sfx = suffix(dtype);
  const std::string hd = std::to_string(a.head_dim);
  if (plan.kind == AttnPlan::kGeneric) {
    return run(rt, s, "x_attn_generic_" + sfx, {static_cast<unsigned>(a.tokens), static_cast<unsigned>(a.num_heads)},
               {128}, 0, &a);
  }
  if (plan.kind == AttnPlan::kPrefill) {
    a.tile_slots = static_cast<int32_t>((a.tokens + kPrefillRows - 1) / kPrefillRows + a.num_seqs);
    return run(rt, s, "x_attn_prefill_" + sfx + "_" + hd,
               {static_cast<unsigned>(a.num_heads), static_cast<unsigned>(a.tile_slots)}, {128},
               prefill_smem(a.head_dim), &a);
  }
  const int group = a.num_heads / a.num_kv_heads;
  a.head_chunks = (group + 15) / 16;
  a.splits = plan.splits;
  a.split_len = plan.split_len;
  a.min_split_keys = plan.min_split_keys;
  if (plan.splits > 1) {
    const uint64_t rows = static_cast<uint64_t>(a.tokens) * a.num_heads * plan.splits;
    a.part_o = workspace;
    a.part_ml = workspace + (rows * a.head_dim * 4 + 255) / 256 * 256;
  }
  // One query token, its keys split into single tiles that the combine kernel merges (batch-1
  // decode): the lean kernel, whose small blocks start beside the previous kernel's. (At batch 4 it
  // measured 1% slower than the 4-warp kernel on an H200, so more tokens keep that one; X_ATTN_LEAN=0,
  // a tuning knob, keeps it at batch 1 too.)
  static const int64_t lean_env = env_int("X_ATTN_LEAN", 1);
  const bool lean = lean_env != 0 && a.tokens == 1 && plan.splits > 1 && plan.split_len == kKeyTile &&
                    plan.min_split_keys == kKeyTile && a.counters == 0;
  if (lean) {
    // Both at the batch-1 decode chain's carveout (DeviceRuntime::decode_carveout).
    a.head_chunks = (group + 7) / 8;
    X_RETURN_IF_ERROR(run(rt, s, "x_attn_decode_lean_" + sfx + "_" + hd,
                          {static_cast<unsigned>(a.tokens), static_cast<unsigned>(a.num_kv_heads * a.head_chunks),
                           static_cast<unsigned>(plan.splits)},
                          {128}, lean_smem(a.head_dim), &a, true, rt.decode_carveout()));
    return run(rt, s, "x_attn_combine_" + sfx, {static_cast<unsigned>(a.tokens), static_cast<unsigned>(a.num_heads)},
               {128}, 0, &a, true, rt.decode_carveout());
  }
  X_RETURN_IF_ERROR(run(rt, s, "x_attn_decode_" + sfx + "_" + hd,
                        {static_cast<unsigned>(a.tokens), static_cast<unsigned>(a.num_kv_heads * a.head_chunks),
                         static_cast<unsigned>(plan.splits)},
                        {128}, decode_smem(a.head_dim), &a, true));
  if (plan.splits == 1 || a.counters != 0) return Status::Ok();  // one pass, or merged by the last split
  return run(rt, s, "x_attn_combine_" + sfx, {static_cast<unsigned>(a.tokens), static_cast<unsigned>(a.num_heads)},
             {128}, 0, &a, true);
}

// Tuning knobs of the small-batch linear: X_GEMV_BLOCKS_PER_SM caps the resident blocks per
// multiprocessor the persistent grid uses; X_GEMV_SPLIT forces the warps per unit (1, 2, 4, 8);
// X_GEMV_PRELOAD=0 turns off loading the first weights before the wait for the previous kernel;
// X_GEMV_LATE_EPILOGUE=1 loads bias and residual in the epilogue instead of at the round's start.

Status launch_gemv(const DeviceRuntime& rt, cuda::CUstream s, int dtype, xk::GemvArgs a) {
  auto where = [](const std::string& m) { return Status::Invalid("fusedLinear: " + m); };
  if (a.m < 1 || a.m > xk::kGemvMaxRows) {
    return where("x has " + std::to_string(a.m) + " rows; expected 1.." + std::to_string(xk::kGemvMaxRows));
  }
  if (a.k % 8 != 0 || a.ld_x % 8 != 0 || !aligned16(a.x) || !aligned16(a.w) || (a.norm_w != 0 && !aligned16(a.norm_w))) {
    return where("x and w need rows of a multiple of 8 elements at 16-byte aligned addresses (k = " +
                 std::to_string(a.k) + ", ld_x = " + std::to_string(a.ld_x) + ")");
  }
  const bool norm = a.norm_w != 0;
  const uint64_t smem = norm ? static_cast<uint64_t>(a.m) * a.k * 2 : 0;
  if (smem + 256 > static_cast<uint64_t>(rt.max_dynamic_smem())) {
    return where("the normalized rows (" + std::to_string(smem) + " bytes) exceed the device's shared memory (" +
                 std::to_string(rt.max_dynamic_smem()) + " bytes per block)");
  }
  switch (a.mode) {
    case xk::kGemvStore:
    case xk::kGemvResidual: a.units = (a.n + 1) / 2; break;
    case xk::kGemvSiluMul: a.units = a.n; break;
    case xk::kGemvRotary:
      if (a.head_dim < 2 || a.head_dim % 2 != 0 || a.n != (a.num_heads + 2 * int64_t{a.num_kv_heads}) * a.head_dim) {
        return where("rotary mode needs (numHeads + 2·numKvHeads)·headDim output columns and an even headDim");
      }
      a.units = a.n / 2;
      break;
    default: return where("unknown mode " + std::to_string(a.mode));
  }
  const std::string name = std::string("x_gemv_") + suffix(dtype) + (norm ? "_n" : "_m") + std::to_string(a.m);
  constexpr unsigned kThreads = 256, kWarps = kThreads / 32;
  static const int64_t cap = env_int("X_GEMV_BLOCKS_PER_SM", 0);
  if (a.k >= (int64_t{1} << 31)) return where("k = " + std::to_string(a.k) + " is too large");
  // One row (the batch-1 decode chain) launches at the chain's carveout (DeviceRuntime::
  // decode_carveout), or at one that holds the blocks registers allow where that is too small
  // (staged rows of x take k · 2 bytes per row and block); more rows at the driver's choice.
  int64_t per_sm = rt.resident_blocks(name.c_str(), kThreads, static_cast<unsigned>(smem));
  int carveout = -1;
  if (a.m == 1 && rt.decode_carveout() >= 0) {
    const uint64_t per_block = rt.block_smem(name.c_str(), static_cast<unsigned>(smem));
    per_sm = std::max<int64_t>(per_sm, rt.resident_blocks(name.c_str(), kThreads, 0));
    if (rt.smem_per_sm() > 0) per_sm = std::min<int64_t>(per_sm, std::max<uint64_t>(1, rt.smem_per_sm() / per_block));
    const uint64_t need = static_cast<uint64_t>(per_sm) * per_block;
    carveout = std::max(rt.decode_carveout(), rt.carveout_for(need));
  }
  if (cap > 0) per_sm = std::min(per_sm, cap);
  const int64_t nchunk = a.k / 8;
  // Split each unit's k range over `split` warps of a block (kWarps / split units per block and
  // round) when that takes fewer rounds of the resident warps per byte: a unit per warp leaves
  // warps idle on narrow layers. Each warp keeps a whole iteration (32 lanes x 4 chunks) per unit.
  // (Balancing the grid so rounds come out even measured slower on an H200.)
  static const int64_t force_split = env_int("X_GEMV_SPLIT", 0);
  const int64_t max_blocks = per_sm * rt.multiprocessors();
  const int64_t resident = max_blocks * kWarps;
  a.split = 1;
  double best = 0;
  for (int sp = 1; sp <= 8; sp *= 2) {
    if (sp > 1 && nchunk / sp < 128) break;
    const double cost = static_cast<double>(ceil_div(a.units * sp, resident)) / sp;
    if (sp == 1 || cost < best - 1e-9) {
      best = cost;
      a.split = sp;
    }
  }
  if (force_split == 1 || force_split == 2 || force_split == 4 || force_split == 8) a.split = static_cast<int32_t>(force_split);
  const int64_t blocks =
      std::max<int64_t>(1, std::min<int64_t>(ceil_div(a.units, kWarps / a.split), max_blocks));
  static const int64_t preload = env_int("X_GEMV_PRELOAD", 1);
  static const int64_t late_epilogue = env_int("X_GEMV_LATE_EPILOGUE", 0);
  a.preload = (preload != 0 ? 1 : 0) | (late_epilogue != 0 ? 2 : 0);
  return run(rt, s, name, {static_cast<unsigned>(blocks)}, {kThreads}, static_cast<unsigned>(smem), &a, true, carveout);
}

uint64_t sample_stats_offset(int64_t rows, int64_t vocab) {
  return (static_cast<uint64_t>(rows) * vocab * 8 + 15) / 16 * 16;
}
uint64_t sample_workspace_bytes(int64_t rows, int64_t vocab) {
  const int64_t chunks = (vocab + xk::kSampleChunk - 1) / xk::kSampleChunk;
  return sample_stats_offset(rows, vocab) + static_cast<uint64_t>(rows) * chunks * sizeof(xk::SampleChunkStats);
}

Status launch_sample(const DeviceRuntime& rt, cuda::CUstream s, const xk::SampleArgs& a) {
  if (a.rows < 1 || a.rows > 65535) {
    return Status::Invalid("sample: " + std::to_string(a.rows) + " rows; expected 1..65535 per call");
  }
  xk::SampleArgs args = a;
  args.chunks = static_cast<int32_t>((a.vocab + xk::kSampleChunk - 1) / xk::kSampleChunk);
  args.stats = a.work + sample_stats_offset(a.rows, a.vocab);
  const char* sfx = a.logits_dtype == xk::kF32 ? "f32" : a.logits_dtype == xk::kF16 ? "f16" : "bf16";
  // The chunk statistics over many blocks, then one block per row (which reads its parameters
  // while the statistics run: programmatic dependent launch).
  X_RETURN_IF_ERROR(run(rt, s, std::string("x_sample_stats_") + sfx,
                        {static_cast<unsigned>(args.chunks), static_cast<unsigned>(a.rows)}, {256}, 0, &args));
  return run(rt, s, std::string("x_sample_") + sfx, {static_cast<unsigned>(a.rows)}, {512}, 0, &args, true);
}

std::string describe_error(const xk::ErrorWord& e) {
  auto n = [](int64_t v) { return std::to_string(v); };
  switch (e.code) {
    case 0: return "";
    case xk::kErrEmbeddingId:
      return "embedding: ids[" + n(e.index) + "] = " + n(e.value) + " is outside the vocabulary [0, " + n(e.limit) +
             ") (its row was filled with NaN)";
    case xk::kErrRotaryPosition:
      return "rotaryEmbedding: positions[" + n(e.index) + "] = " + n(e.value) + " is outside the cos/sin cache [0, " +
             n(e.limit) + ") (the token was left unrotated)";
    case xk::kErrSlot:
      return "reshapeAndCache (or rotaryEmbedding's cache write): slotMapping[" + n(e.index) + "] = " + n(e.value) +
             " is outside [-1, " + n(e.limit) + ") (the token was not cached)";
    case xk::kErrQueryStartLoc:
      return "pagedAttention: queryStartLoc[" + n(e.index) + "] = " + n(e.value) +
             " is inconsistent (it must start at 0, never decrease and end at " + n(e.limit) + ")";
    case xk::kErrSeqLen:
      return "pagedAttention: seqLens[" + n(e.index) + "] = " + n(e.value) + " must be in [query length " + n(e.aux) +
             ", " + n(e.limit) + "] (blockTables width × blockSize); its outputs are NaN";
    case xk::kErrBlockId:
      return "pagedAttention: blockTables[" + n(e.index) + "][" + n(e.aux) + "] = " + n(e.value) + " is outside [0, " +
             n(e.limit) + ") (those keys were skipped)";
    default: return "a kernel reported error code " + n(e.code);
  }
}

}  // namespace x::kernels::gpu
