// Node-API glue for @x/kernels' CUDA ops: converts the JS parameter objects (shape-checked by the TS
// layer) into the kernel argument structs of cuda/params.h, declares every pointer range to the
// stream through the core C table (stream_use_range: sleeping or unknown memory is refused, and
// while the stream captures a graph only persistent memory is accepted and recorded), then enqueues
// on the caller's stream. Nothing here waits for the GPU.
#include <napi.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "../cuda/cublaslt.h"
#include "../cuda/ops.h"
#include "../cuda/runtime.h"
#include "cuda_binding.h"
#include "x/core_api.h"
#include "x/napi_util.h"

namespace x::kernels::binding {
namespace {

using gpu::DeviceRuntime;
using x::napi::u64;

struct Call {
  x_stream* stream = nullptr;
  int device = 0;
  cuda::CUstream cu = nullptr;
  DeviceRuntime* rt = nullptr;
};

[[noreturn]] void fail(Napi::Env env, const Status& st) { throw x::napi::make_error(env, st); }
void check(Napi::Env env, const Status& st) {
  if (!st.ok()) fail(env, st);
}

Call cuda_call(Napi::Env env, const Napi::Value& v) {
  const x_core_api* api = core_api(env);
  Call c;
  c.stream = reinterpret_cast<x_stream*>(u64(v, "stream"));
  int rc = api->stream_device(c.stream, &c.device);
  if (rc != X_SUCCESS) fail(env, Status::Error(static_cast<Code>(rc), std::string("stream: ") + api->last_error()));
  if (c.device < 0) fail(env, Status::Invalid("stream: expected a CUDA stream; received a CPU stream"));
  c.cu = static_cast<cuda::CUstream>(api->stream_cuda_handle(c.stream));
  if (c.cu == nullptr) fail(env, Status::Invalid("stream: the stream was disposed; create a new one"));
  check(env, DeviceRuntime::get(c.device, &c.rt));
  return c;
}

void use(Napi::Env env, const Call& c, uint64_t ptr, uint64_t bytes, const char* what) {
  if (bytes == 0) return;
  const x_core_api* api = core_api(env);
  int rc = api->stream_use_range(c.stream, ptr, bytes, what);
  if (rc != X_SUCCESS) fail(env, Status::Error(static_cast<Code>(rc), api->last_error()));
}

double num(const Napi::Object& o, const char* key) { return o.Get(key).As<Napi::Number>().DoubleValue(); }
int64_t i64(const Napi::Object& o, const char* key) { return static_cast<int64_t>(num(o, key)); }
bool has(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}
uint64_t ptr(const Napi::Object& o, const char* key) { return has(o, key) ? u64(o.Get(key), key) : 0; }

struct GMat {
  uint64_t ptr = 0;
  int64_t rows = 0, cols = 0, ld = 0;
};

// {ptr, rows, cols, ld} of `esize`-byte elements, declared to the stream.
GMat gmat(Napi::Env env, const Call& c, const Napi::Object& o, const char* key, int esize) {
  GMat m;
  if (!has(o, key)) return m;
  Napi::Object v = o.Get(key).As<Napi::Object>();
  m.ptr = u64(v.Get("ptr"), key);
  m.rows = i64(v, "rows");
  m.cols = i64(v, "cols");
  m.ld = i64(v, "ld");
  if (m.rows > 0 && m.cols > 0) use(env, c, m.ptr, static_cast<uint64_t>((m.rows - 1) * m.ld + m.cols) * esize, key);
  return m;
}

uint64_t buffer(Napi::Env env, const Call& c, const Napi::Object& o, const char* key, uint64_t bytes) {
  uint64_t p = ptr(o, key);
  if (p != 0) use(env, c, p, bytes, key);
  return p;
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  xk::EmbeddingArgs a{};
  GMat out = gmat(env, c, o, "out", 2), table = gmat(env, c, o, "table", 2);
  a.out = out.ptr;
  a.table = table.ptr;
  a.tokens = out.rows;
  a.hidden = out.cols;
  a.ld_out = out.ld;
  a.ld_table = table.ld;
  a.vocab = table.rows;
  a.ids = buffer(env, c, o, "ids", out.rows * 4);
  a.err = c.rt->error_word();
  check(env, gpu::launch_embedding(*c.rt, c.cu, i64(o, "dtype"), a));
  return env.Undefined();
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  xk::RmsNormArgs a{};
  GMat out = gmat(env, c, o, "out", 2), x = gmat(env, c, o, "x", 2), res = gmat(env, c, o, "residual", 2);
  a.out = out.ptr;
  a.x = x.ptr;
  a.residual = res.ptr;
  a.rows = x.rows;
  a.cols = x.cols;
  a.ld_out = out.ld;
  a.ld_x = x.ld;
  a.ld_res = res.ld;
  a.weight = buffer(env, c, o, "weight", x.cols * 2);
  a.eps = static_cast<float>(num(o, "eps"));
  check(env, gpu::launch_rms_norm(*c.rt, c.cu, i64(o, "dtype"), a));
  return env.Undefined();
}

Napi::Value Rotary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  xk::RotaryArgs a{};
  GMat q = gmat(env, c, o, "q", 2), k = gmat(env, c, o, "k", 2), v = gmat(env, c, o, "v", 2);
  a.q = q.ptr;
  a.k = k.ptr;
  a.v = v.ptr;
  a.tokens = q.rows;
  a.ld_q = q.ld;
  a.ld_k = k.ld;
  a.ld_v = v.ld;
  a.head_dim = i64(o, "headDim");
  a.rot = i64(o, "rotaryDim");
  a.nq = q.cols / a.head_dim;
  a.nk = k.ptr != 0 ? k.cols / a.head_dim : 0;
  a.max_pos = i64(o, "maxPos");
  a.neox = o.Get("neox").ToBoolean() ? 1 : 0;
  a.pos_i64 = o.Get("positionsI64").ToBoolean() ? 1 : 0;
  a.positions = buffer(env, c, o, "positions", q.rows * (a.pos_i64 ? 8 : 4));
  a.cos_sin = buffer(env, c, o, "cosSin", static_cast<uint64_t>(a.max_pos * a.rot * 4));
  if (has(o, "kCache")) {
    a.num_slots = i64(o, "numSlots");
    const uint64_t bytes = static_cast<uint64_t>(a.num_slots) * a.nk * a.head_dim * 2;
    a.k_cache = buffer(env, c, o, "kCache", bytes);
    a.v_cache = buffer(env, c, o, "vCache", bytes);
    a.slots = buffer(env, c, o, "slotMapping", q.rows * 8);
  }
  a.err = c.rt->error_word();
  check(env, gpu::launch_rotary(*c.rt, c.cu, i64(o, "dtype"), a));
  return env.Undefined();
}

Napi::Value SiluAndMul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  GMat out = gmat(env, c, o, "out", 2), x = gmat(env, c, o, "x", 2);
  xk::SiluArgs a{out.ptr, x.ptr, out.rows, out.cols, out.ld, x.ld};
  check(env, gpu::launch_silu_and_mul(*c.rt, c.cu, i64(o, "dtype"), a));
  return env.Undefined();
}

Napi::Value ReshapeAndCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  xk::CacheWriteArgs a{};
  GMat k = gmat(env, c, o, "k", 2), v = gmat(env, c, o, "v", 2);
  a.k = k.ptr;
  a.v = v.ptr;
  a.tokens = k.rows;
  a.width = k.cols;
  a.ld_k = k.ld;
  a.ld_v = v.ld;
  a.num_slots = i64(o, "numSlots");
  const uint64_t bytes = static_cast<uint64_t>(a.num_slots) * a.width * 2;
  a.k_cache = buffer(env, c, o, "kCache", bytes);
  a.v_cache = buffer(env, c, o, "vCache", bytes);
  a.slots = buffer(env, c, o, "slotMapping", k.rows * 8);
  a.err = c.rt->error_word();
  check(env, gpu::launch_cache_write(*c.rt, c.cu, i64(o, "dtype"), a));
  return env.Undefined();
}

bool al16(uint64_t p) { return (p & 15) == 0; }

Napi::Value PagedAttention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  xk::AttnArgs a{};
  GMat out = gmat(env, c, o, "out", 2), q = gmat(env, c, o, "q", 2);
  a.out = out.ptr;
  a.q = q.ptr;
  a.ld_out = out.ld;
  a.ld_q = q.ld;
  a.tokens = static_cast<int32_t>(q.rows);
  a.num_blocks = static_cast<int32_t>(i64(o, "numBlocks"));
  a.block_size = static_cast<int32_t>(i64(o, "blockSize"));
  a.num_kv_heads = static_cast<int32_t>(i64(o, "numKvHeads"));
  a.head_dim = static_cast<int32_t>(i64(o, "headDim"));
  a.num_heads = static_cast<int32_t>(i64(o, "numHeads"));
  a.num_seqs = static_cast<int32_t>(i64(o, "numSeqs"));
  a.max_blocks = static_cast<int32_t>(i64(o, "maxBlocks"));
  a.scale_log2 = static_cast<float>(num(o, "scale") * 1.4426950408889634);
  const uint64_t cache_bytes = static_cast<uint64_t>(a.num_blocks) * a.block_size * a.num_kv_heads * a.head_dim * 2;
  a.k_cache = buffer(env, c, o, "kCache", cache_bytes);
  a.v_cache = buffer(env, c, o, "vCache", cache_bytes);
  a.block_tables = buffer(env, c, o, "blockTables", static_cast<uint64_t>(a.num_seqs) * a.max_blocks * 4);
  a.seq_lens = buffer(env, c, o, "seqLens", static_cast<uint64_t>(a.num_seqs) * 4);
  a.qsl = buffer(env, c, o, "queryStartLoc", static_cast<uint64_t>(a.num_seqs + 1) * 4);
  a.err = c.rt->error_word();
  a.host_metadata = i64(o, "hostMetadata") != 0 ? 1 : 0;
  a.early_keys = a.host_metadata != 0 && i64(o, "earlierKeysReady") != 0 ? 1 : 0;
  const uint64_t ws = ptr(o, "workspace");
  const uint64_t ws_bytes = ws != 0 ? u64(o.Get("workspaceBytes"), "workspaceBytes") : 0;
  const bool aligned = a.ld_q % 8 == 0 && a.ld_out % 2 == 0 && al16(a.q) && al16(a.k_cache) && al16(a.v_cache) &&
                       (a.out & 3) == 0;
  const gpu::AttnPlan plan = gpu::plan_attention(*c.rt, a, i64(o, "maxSeqLen"), static_cast<int>(i64(o, "decode")),
                                                 ws_bytes, aligned);
  if (plan.workspace_bytes > 0) use(env, c, ws, plan.workspace_bytes, "options.workspace");
  if (plan.kind == gpu::AttnPlan::kDecode && plan.splits > 1) {
    // One counter per (token, KV head, head chunk): what the decode grid's y dimension covers.
    const int64_t chunks = (a.num_heads / a.num_kv_heads + 15) / 16;
    a.counters = buffer(env, c, o, "counters", static_cast<uint64_t>(a.tokens) * a.num_kv_heads * chunks * 4);
  }
  check(env, gpu::launch_attention(*c.rt, c.cu, static_cast<int>(i64(o, "dtype")), a, plan, ws));
  return env.Undefined();
}

// dst[di[k]] = src[si[k]] for k >= k0 (4-byte elements), up to kIndexCopyMax pairs per launch.
void launch_index_copies(Napi::Env env, const Call& c, uint64_t dst, uint64_t src, const Napi::Int32Array& di,
                         const Napi::Int32Array& si, size_t k0) {
  const size_t n = di.ElementLength();
  for (; k0 < n; k0 += xk::kIndexCopyMax) {
    xk::IndexCopyArgs a{};
    a.dst = dst;
    a.src = src;
    a.n = static_cast<int32_t>(std::min<size_t>(xk::kIndexCopyMax, n - k0));
    for (int k = 0; k < a.n; k++) {
      a.dst_index[k] = di[k0 + k];
      a.src_index[k] = si[k0 + k];
    }
    check(env, gpu::launch_index_copy(*c.rt, c.cu, a));
  }
}

// indexCopy: dst[dstIndex[k]] = src[srcIndex[k]] (4-byte elements), indices checked by the TS layer
// and passed by value, up to kIndexCopyMax per launch.
Napi::Value IndexCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  const int64_t dst_n = i64(o, "dstNumel"), src_n = i64(o, "srcNumel");
  const uint64_t dst = buffer(env, c, o, "dst", static_cast<uint64_t>(dst_n) * 4);
  const uint64_t src = buffer(env, c, o, "src", static_cast<uint64_t>(src_n) * 4);
  launch_index_copies(env, c, dst, src, o.Get("dstIndex").As<Napi::Int32Array>(),
                      o.Get("srcIndex").As<Napi::Int32Array>(), 0);
  return env.Undefined();
}

// copyWithIndexCopy: `bytes` (a multiple of 4) from src to dst, then dst's words dstWord[k] (sorted
// ascending by the TS layer, which checked every index) from feed[srcIndex[k]]: the first
// kIndexCopyMax pairs inside the copy's own launch, the rest as index copies after it.
Napi::Value CopyIndexed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  const int64_t bytes = i64(o, "bytes");
  xk::CopyIndexedArgs a{};
  a.dst = buffer(env, c, o, "dst", static_cast<uint64_t>(bytes));
  a.src = buffer(env, c, o, "src", static_cast<uint64_t>(bytes));
  a.words = bytes / 4;
  Napi::Int32Array dw = o.Get("dstWord").As<Napi::Int32Array>();
  Napi::Int32Array si = o.Get("srcIndex").As<Napi::Int32Array>();
  const size_t n = dw.ElementLength();
  if (n > 0) a.feed = buffer(env, c, o, "feed", static_cast<uint64_t>(i64(o, "feedNumel")) * 4);
  a.n = static_cast<int32_t>(std::min<size_t>(xk::kIndexCopyMax, n));
  for (int k = 0; k < a.n; k++) {
    a.dst_word[k] = dw[k];
    a.src_index[k] = si[k];
  }
  a.lo = a.n > 0 ? a.dst_word[0] : 0;
  a.hi = a.n > 0 ? a.dst_word[a.n - 1] : -1;
  check(env, gpu::launch_copy_indexed(*c.rt, c.cu, a));
  launch_index_copies(env, c, a.dst, a.feed, dw, si, xk::kIndexCopyMax);
  return env.Undefined();
}

// attentionPlan(stream, params) -> {kind, splits, workspaceBytes}: what pagedAttention would do.
Napi::Value AttentionPlan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[1].As<Napi::Object>();
  DeviceRuntime* rt = nullptr;
  check(env, DeviceRuntime::get(static_cast<int>(i64(o, "device")), &rt));
  xk::AttnArgs a{};
  a.tokens = static_cast<int32_t>(i64(o, "tokens"));
  a.num_seqs = static_cast<int32_t>(i64(o, "numSeqs"));
  a.num_heads = static_cast<int32_t>(i64(o, "numHeads"));
  a.num_kv_heads = static_cast<int32_t>(i64(o, "numKvHeads"));
  a.head_dim = static_cast<int32_t>(i64(o, "headDim"));
  a.block_size = static_cast<int32_t>(i64(o, "blockSize"));
  a.max_blocks = static_cast<int32_t>(i64(o, "maxBlocks"));
  const gpu::AttnPlan p = gpu::plan_attention(*rt, a, i64(o, "maxSeqLen"), static_cast<int>(i64(o, "decode")),
                                              u64(o.Get("workspaceBytes"), "workspaceBytes"), true);
  Napi::Object r = Napi::Object::New(env);
  const char* kinds[] = {"prefill", "decode", "generic"};
  r.Set("kind", kinds[p.kind]);
  r.Set("splits", p.splits);
  r.Set("workspaceBytes", Napi::Number::New(env, static_cast<double>(p.workspace_bytes)));
  return r;
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  gpu::GemmArgs g;
  g.device = c.device;
  g.dtype_in = static_cast<int>(i64(o, "dtypeIn"));
  g.dtype_out = static_cast<int>(i64(o, "dtypeOut"));
  const int out_size = g.dtype_out == xk::kF32 ? 4 : 2;
  GMat out = gmat(env, c, o, "out", out_size), a = gmat(env, c, o, "a", 2), w = gmat(env, c, o, "w", 2);
  g.out = out.ptr;
  g.a = a.ptr;
  g.w = w.ptr;
  g.m = a.rows;
  g.k = a.cols;
  g.n = w.rows;
  g.ld_out = out.ld;
  g.ld_a = a.ld;
  g.ld_w = w.ld;
  g.bias = buffer(env, c, o, "bias", w.rows * out_size);
  g.workspace = ptr(o, "workspace");
  g.workspace_bytes = g.workspace != 0 ? u64(o.Get("workspaceBytes"), "workspaceBytes") : 0;
  use(env, c, g.workspace, g.workspace_bytes, "options.workspace");
  check(env, gpu::gemm(g, c.cu));
  return env.Undefined();
}

// Pinned host blocks the sampling kernel reads its per-row parameters from (through UVA), one pool
// per device, reused across calls. Each block carries an event recorded after the kernel that
// reads it; a block is handed out again only once its event completed, so nothing is enqueued on
// the caller's stream besides the kernel itself (a host callback would stall the stream).
struct PinnedBlock {
  void* ptr = nullptr;
  size_t size = 0;
  cuda::CUevent done = nullptr;
  bool busy = false;  // between acquire and the event record
};
struct PinnedPool {
  std::mutex mu;
  std::vector<PinnedBlock> blocks;
};
PinnedPool& pool(int device) {
  static auto* p = new std::array<PinnedPool, 64>();  // lives until process exit
  return (*p)[static_cast<size_t>(device)];
}

// Index of a free block of at least `need` bytes in the device's pool (allocated if none is).
Status acquire_block(const Call& c, size_t need, size_t* index) {
  const cuda::Driver* d = c.rt->driver();
  PinnedPool& pp = pool(c.device);
  {
    std::lock_guard<std::mutex> lock(pp.mu);
    for (size_t i = 0; i < pp.blocks.size(); i++) {
      PinnedBlock& b = pp.blocks[i];
      if (!b.busy && b.size >= need && d->cuEventQuery(b.done) == cuda::CUDA_SUCCESS) {
        b.busy = true;
        *index = i;
        return Status::Ok();
      }
    }
  }
  PinnedBlock b;
  b.size = 65536;
  while (b.size < need) b.size <<= 1;
  X_RETURN_IF_ERROR(cuda_status(
      d->cuMemHostAlloc(&b.ptr, b.size, cuda::CU_MEMHOSTALLOC_PORTABLE | cuda::CU_MEMHOSTALLOC_DEVICEMAP),
      "cuMemHostAlloc"));
  Status st = cuda_status(d->cuEventCreate(&b.done, cuda::CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  if (!st.ok()) {
    d->cuMemFreeHost(b.ptr);
    return st;
  }
  b.busy = true;
  std::lock_guard<std::mutex> lock(pp.mu);
  pp.blocks.push_back(b);
  *index = pp.blocks.size() - 1;
  return Status::Ok();
}

Napi::Value Sample(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  const cuda::Driver* d = c.rt->driver();
  if (gpu::stream_capturing(d, c.cu)) {
    fail(env, Status::Invalid("sample: not capturable in a CUDA graph (its per-row parameters are staged per call); "
                              "sample after the graph replays"));
  }
  xk::SampleArgs a{};
  a.logits_dtype = static_cast<int32_t>(i64(o, "logitsDtype"));
  GMat logits = gmat(env, c, o, "logits", a.logits_dtype == xk::kF32 ? 4 : 2);
  a.logits = logits.ptr;
  a.ld = logits.ld;
  a.vocab = logits.cols;
  a.rows = static_cast<int32_t>(logits.rows);
  a.num_top = static_cast<int32_t>(i64(o, "numTop"));
  const int64_t b = logits.rows, vocab = logits.cols;
  a.work = buffer(env, c, o, "work", gpu::sample_workspace_bytes(b, vocab));
  a.sampled = buffer(env, c, o, "sampled", b * 4);
  a.sampled_logprob = buffer(env, c, o, "sampledLogprob", b * 4);
  a.sampled_rank = buffer(env, c, o, "sampledRank", b * 4);
  a.top_ids = buffer(env, c, o, "topIds", b * a.num_top * 4);
  a.top_logprobs = buffer(env, c, o, "topLogprobs", b * a.num_top * 4);
  Napi::ArrayBuffer packed = o.Get("packed").As<Napi::ArrayBuffer>();
  const int64_t num_ids = i64(o, "numIds");
  const size_t params_bytes = static_cast<size_t>(b) * sizeof(xk::SampleRowParams);
  const size_t ids_at = (params_bytes + 15) / 16 * 16, bias_at = ids_at + (num_ids * 4 + 15) / 16 * 16;
  const size_t need = bias_at + num_ids * 4;
  if (packed.ByteLength() < params_bytes + num_ids * 8) {
    fail(env, Status::Invalid("sample: the packed rows are shorter than their header says"));
  }
  // Re-check what the kernel will index with (the TS layer validated it already).
  const auto* rows = static_cast<const xk::SampleRowParams*>(packed.Data());
  const auto* ids = reinterpret_cast<const int32_t*>(static_cast<const uint8_t*>(packed.Data()) + params_bytes);
  for (int64_t r = 0; r < b; r++) {
    const xk::SampleRowParams& p = rows[r];
    for (auto [off, n] : {std::pair{p.prompt_off, p.prompt_n}, std::pair{p.output_off, p.output_n},
                          std::pair{p.bias_off, p.bias_n}, std::pair{p.suppress_off, p.suppress_n}}) {
      if (off < 0 || n < 0 || off + static_cast<int64_t>(n) > num_ids) fail(env, Status::Invalid("sample: bad id list"));
      for (int j = 0; j < n; j++) {
        if (ids[off + j] < 0 || ids[off + j] >= vocab) {
          fail(env, Status::Invalid("sample: row " + std::to_string(r) + " names token " + std::to_string(ids[off + j]) +
                                    " outside the vocabulary [0, " + std::to_string(vocab) + ")"));
        }
      }
    }
  }
  check(env, c.rt->enter());
  size_t index = 0;
  check(env, acquire_block(c, need, &index));
  PinnedPool& pp = pool(c.device);
  uint8_t* base = nullptr;
  cuda::CUevent done = nullptr;
  {
    std::lock_guard<std::mutex> lock(pp.mu);
    base = static_cast<uint8_t*>(pp.blocks[index].ptr);
    done = pp.blocks[index].done;
  }
  std::memcpy(base, packed.Data(), params_bytes);
  std::memcpy(base + ids_at, ids, num_ids * 4);
  std::memcpy(base + bias_at, static_cast<const uint8_t*>(packed.Data()) + params_bytes + num_ids * 4, num_ids * 4);
  a.params = reinterpret_cast<uint64_t>(base);
  a.ids = reinterpret_cast<uint64_t>(base + ids_at);
  a.bias = reinterpret_cast<uint64_t>(base + bias_at);
  Status st = gpu::launch_sample(*c.rt, c.cu, a);
  const bool launched = st.ok();
  // The block is handed out again only after the kernel that reads it has run; a kernel that was
  // enqueued but whose event could not be recorded keeps its block forever (never reused early).
  if (launched) st = cuda_status(d->cuEventRecord(done, c.cu), "cuEventRecord");
  {
    std::lock_guard<std::mutex> lock(pp.mu);
    pp.blocks[index].busy = launched && !st.ok();
  }
  check(env, st);
  return env.Undefined();
}

Napi::Value FusedLinear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  xk::GemvArgs a{};
  a.out_f32 = o.Get("outF32").ToBoolean() ? 1 : 0;
  GMat out = gmat(env, c, o, "out", a.out_f32 ? 4 : 2), x = gmat(env, c, o, "x", 2), w = gmat(env, c, o, "w", 2);
  a.out = out.ptr;
  a.x = x.ptr;
  a.w = w.ptr;
  a.m = x.rows;
  a.k = x.cols;
  a.n = out.cols;
  a.ld_out = out.ld;
  a.ld_x = x.ld;
  a.mode = static_cast<int32_t>(i64(o, "mode"));
  a.bias = buffer(env, c, o, "bias", static_cast<uint64_t>(w.rows) * 2);
  a.norm_w = buffer(env, c, o, "normWeight", static_cast<uint64_t>(x.cols) * 2);
  a.eps = has(o, "eps") ? static_cast<float>(num(o, "eps")) : 0.0f;
  if (a.mode == xk::kGemvRotary) {
    a.head_dim = i64(o, "headDim");
    a.num_heads = static_cast<int32_t>(i64(o, "numHeads"));
    a.num_kv_heads = static_cast<int32_t>(i64(o, "numKvHeads"));
    a.neox = o.Get("neox").ToBoolean() ? 1 : 0;
    a.pos_i64 = o.Get("positionsI64").ToBoolean() ? 1 : 0;
    a.max_pos = i64(o, "maxPos");
    a.num_slots = i64(o, "numSlots");
    a.positions = buffer(env, c, o, "positions", static_cast<uint64_t>(x.rows) * (a.pos_i64 ? 8 : 4));
    a.cos_sin = buffer(env, c, o, "cosSin", static_cast<uint64_t>(a.max_pos * a.head_dim * 4));
    const uint64_t bytes = static_cast<uint64_t>(a.num_slots) * a.num_kv_heads * a.head_dim * 2;
    a.k_cache = buffer(env, c, o, "kCache", bytes);
    a.v_cache = buffer(env, c, o, "vCache", bytes);
    a.slots = buffer(env, c, o, "slotMapping", static_cast<uint64_t>(x.rows) * 8);
  }
  a.err = c.rt->error_word();
  check(env, gpu::launch_gemv(*c.rt, c.cu, static_cast<int>(i64(o, "dtype")), a));
  return env.Undefined();
}

Napi::Value FetchErrors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c = cuda_call(env, info[0]);
  check(env, c.rt->fetch_errors(c.cu));
  return env.Undefined();
}

Napi::Value ReadErrors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DeviceRuntime* rt = nullptr;
  check(env, DeviceRuntime::get(info[0].As<Napi::Number>().Int32Value(), &rt));
  std::string msg = gpu::describe_error(rt->fetched_errors());
  return msg.empty() ? env.Undefined() : Napi::String::New(env, msg);
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("kernels", gpu::kernels_compiled_in());
  o.Set("architectures", gpu::kernel_architectures());
  bool ok = false;
  std::string lt = gpu::cublaslt_status(&ok);
  o.Set("cublasLt", lt);
  o.Set("cublasLtAvailable", ok);
  return o;
}

}  // namespace

void register_cuda(Napi::Env env, Napi::Object exports) {
  struct Fn {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  };
  const Fn fns[] = {
      {"cudaEmbedding", Embedding},       {"cudaRmsNorm", RmsNorm},
      {"cudaRotaryEmbedding", Rotary},    {"cudaSiluAndMul", SiluAndMul},
      {"cudaReshapeAndCache", ReshapeAndCache}, {"cudaPagedAttention", PagedAttention},
      {"cudaAttentionPlan", AttentionPlan}, {"cudaMatmul", Matmul},
      {"cudaSample", Sample},             {"cudaFetchErrors", FetchErrors},
      {"cudaIndexCopy", IndexCopy},       {"cudaCopyIndexed", CopyIndexed},
      {"cudaFusedLinear", FusedLinear},   {"cudaReadErrors", ReadErrors},
      {"cudaInfo", Info},
  };
  for (const Fn& f : fns) exports.Set(f.name, Napi::Function::New(env, f.fn, f.name));
}

}  // namespace x::kernels::binding
