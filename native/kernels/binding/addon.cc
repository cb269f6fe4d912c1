// Node-API glue for @x/kernels: converts the JS arguments (already shape-checked by the TS layer)
// into the plain structs of csrc/kernels.h, checks every pointer range against x's memory registry
// (so sleeping or unknown memory is refused with a typed error instead of a fault), and enqueues the
// kernel on the caller's stream through the core C table. Nothing here runs kernels synchronously.
#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "../csrc/cpu_graph.h"
#include "../csrc/kernels.h"
#include "../csrc/simd.h"
#include "../csrc/thread_pool.h"
#include "cuda_binding.h"
#include "x/core_api.h"
#include "x/napi_util.h"

namespace {

using x::Status;
using x::kernels::Mat;
using x::napi::u64;

const x_core_api* g_api = nullptr;

// Streams capturing a CpuGraph (beginCapture..endCapture). Guarded: Node worker threads share the
// addon's globals.
std::mutex g_capture_mu;
std::unordered_map<x_stream*, std::shared_ptr<x::kernels::CpuGraph>> g_capturing;
// The graph the current kernel call records into: set by stream_of() at the start of every kernel
// entry point (null when its stream is not capturing), read by check_range() and enqueue().
thread_local x::kernels::CpuGraph* t_graph = nullptr;
// The ranges the current kernel call checked: enqueued with it, so the stream holds them while the
// kernel runs (their memory is not released under it, e.g. by a worker torn down mid-step) and
// cancels the kernel if one was freed or put to sleep before it ran. Reset by stream_of().
thread_local std::vector<x_range> t_ranges;

const x_core_api* api(Napi::Env env) {
  if (g_api == nullptr) throw Napi::Error::New(env, "x_kernels: init(capi) was not called");
  return g_api;
}

void throw_code(Napi::Env env, int code, const std::string& what) {
  Status st = Status::Error(static_cast<x::Code>(code), what);
  throw x::napi::make_error(env, st);
}

// Refuses memory x does not manage or that sleeps (checked at enqueue; the stream runs the op later).
void check_range(Napi::Env env, uint64_t ptr, uint64_t bytes, const char* name) {
  if (bytes == 0) return;
  int rc = api(env)->check_range(X_DEVICE_CPU, ptr, bytes);
  if (rc != X_SUCCESS) throw_code(env, rc, std::string(name) + ": " + api(env)->last_error());
  if (t_graph != nullptr) t_graph->use(ptr, bytes, name);
  t_ranges.push_back(x_range{ptr, bytes, name});
}

double num(const Napi::Object& o, const char* key) { return o.Get(key).As<Napi::Number>().DoubleValue(); }
int64_t i64(const Napi::Object& o, const char* key) { return static_cast<int64_t>(num(o, key)); }
bool flag(const Napi::Object& o, const char* key) { return o.Get(key).ToBoolean(); }
uint64_t ptr(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsUndefined() || v.IsNull() ? 0 : u64(v, key);
}

// {ptr, rows, cols, ld, bf16} -> Mat, range-checked. `key` absent or null -> an empty Mat.
Mat mat(Napi::Env env, const Napi::Object& params, const char* key) {
  Napi::Value v = params.Get(key);
  if (v.IsUndefined() || v.IsNull()) return Mat{};
  Napi::Object o = v.As<Napi::Object>();
  Mat m;
  m.ptr = u64(o.Get("ptr"), key);
  m.rows = i64(o, "rows");
  m.cols = i64(o, "cols");
  m.ld = i64(o, "ld");
  m.bf16 = flag(o, "bf16");
  if (m.rows > 0 && m.cols > 0) {
    check_range(env, m.ptr, ((m.rows - 1) * m.ld + m.cols) * (m.bf16 ? 2 : 4), key);
  }
  return m;
}

uint64_t buffer(Napi::Env env, const Napi::Object& o, const char* key, uint64_t bytes) {
  uint64_t p = ptr(o, key);
  if (p != 0) check_range(env, p, bytes, key);
  return p;
}

x_stream* stream_of(Napi::Env env, const Napi::Value& v) {
  auto* s = reinterpret_cast<x_stream*>(u64(v, "stream"));
  int device = 0;
  int rc = api(env)->stream_device(s, &device);
  if (rc != X_SUCCESS) throw_code(env, rc, std::string("stream: ") + api(env)->last_error());
  if (device != X_DEVICE_CPU) {
    throw_code(env, static_cast<int>(x::Code::kInvalidArgument),
               "stream: the kernels of this build run on CPU streams only; received a stream of cuda:" +
                   std::to_string(device));
  }
  std::lock_guard<std::mutex> lock(g_capture_mu);
  auto it = g_capturing.find(s);
  t_graph = it == g_capturing.end() ? nullptr : it->second.get();
  t_ranges.clear();
  return s;
}

struct Job {
  std::function<Status()> run;
};

// Enqueues `run` on the stream's thread. A failed Status fails the stream: its next synchronize
// reports the op's label.
void enqueue(Napi::Env env, x_stream* s, const char* label, std::function<Status()> run) {
  std::vector<x_range> ranges;
  ranges.swap(t_ranges);
  if (t_graph != nullptr) {  // capturing: record instead of running
    t_graph->add(label, std::move(run));
    t_graph = nullptr;
    return;
  }
  auto* job = new Job{std::move(run)};
  int rc = api(env)->stream_enqueue_host_ranges(
      s, [](void* u) -> int { return static_cast<int>(static_cast<Job*>(u)->run().code); },
      [](void* u) { delete static_cast<Job*>(u); }, job, label, ranges.data(), ranges.size());
  if (rc != X_SUCCESS) {
    delete job;  // not enqueued: its cleanup never runs
    throw_code(env, rc, std::string(label) + ": " + api(env)->last_error());
  }
}

Napi::Value InitApi(const Napi::CallbackInfo& info) {
  auto* table = reinterpret_cast<const x_core_api*>(u64(info[0], "capi"));
  if (table == nullptr || table->version < 1 || table->size < sizeof(x_core_api)) {
    throw Napi::Error::New(info.Env(), "x_kernels: the @x/core C table is too old for this addon");
  }
  g_api = table;
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("threads", Napi::Number::New(info.Env(), x::kernels::threads()));
  o.Set("avx2", Napi::Boolean::New(info.Env(), x::kernels::simd_avx2()));
  return o;
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  x::kernels::EmbeddingParams p;
  p.out = mat(env, o, "out");
  p.table = mat(env, o, "table");
  p.ids = reinterpret_cast<const int32_t*>(buffer(env, o, "ids", p.out.rows * 4));
  enqueue(env, s, "kernels.embedding", [p] { return x::kernels::embedding(p); });
  return env.Undefined();
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  x::kernels::RmsNormParams p;
  p.out = mat(env, o, "out");
  p.x = mat(env, o, "x");
  p.residual = mat(env, o, "residual");
  p.weight_bf16 = flag(o, "weightBf16");
  p.weight = buffer(env, o, "weight", p.x.cols * (p.weight_bf16 ? 2 : 4));
  p.eps = static_cast<float>(num(o, "eps"));
  enqueue(env, s, "kernels.rmsNorm", [p] { return x::kernels::rms_norm(p); });
  return env.Undefined();
}

Napi::Value Rotary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  x::kernels::RotaryParams p;
  p.q = mat(env, o, "q");
  p.k = mat(env, o, "k");
  p.positions_i64 = flag(o, "positionsI64");
  p.positions = buffer(env, o, "positions", p.q.rows * (p.positions_i64 ? 8 : 4));
  p.max_pos = i64(o, "maxPos");
  p.head_dim = i64(o, "headDim");
  p.rotary_dim = i64(o, "rotaryDim");
  p.neox = flag(o, "neox");
  p.cos_sin = reinterpret_cast<const float*>(buffer(env, o, "cosSin", p.max_pos * p.rotary_dim * 4));
  enqueue(env, s, "kernels.rotaryEmbedding", [p] { return x::kernels::rotary_embedding(p); });
  return env.Undefined();
}

Napi::Value SiluAndMul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  x::kernels::SiluAndMulParams p;
  p.out = mat(env, o, "out");
  p.x = mat(env, o, "x");
  enqueue(env, s, "kernels.siluAndMul", [p] { return x::kernels::silu_and_mul(p); });
  return env.Undefined();
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  x::kernels::MatmulParams p;
  p.out = mat(env, o, "out");
  p.a = mat(env, o, "a");
  p.w = mat(env, o, "w");
  p.bias_bf16 = flag(o, "biasBf16");
  p.bias = buffer(env, o, "bias", p.w.rows * (p.bias_bf16 ? 2 : 4));
  enqueue(env, s, "kernels.matmul", [p] { return x::kernels::matmul(p); });
  return env.Undefined();
}

x::kernels::CacheLayout cache_layout(Napi::Env env, const Napi::Object& o) {
  x::kernels::CacheLayout c;
  c.num_blocks = i64(o, "numBlocks");
  c.block_size = i64(o, "blockSize");
  c.num_kv_heads = i64(o, "numKvHeads");
  c.head_dim = i64(o, "headDim");
  uint64_t bytes = c.num_blocks * c.block_size * c.num_kv_heads * c.head_dim * 4;
  c.k_cache = buffer(env, o, "kCache", bytes);
  c.v_cache = buffer(env, o, "vCache", bytes);
  return c;
}

Napi::Value ReshapeAndCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  x::kernels::ReshapeAndCacheParams p;
  p.k = mat(env, o, "k");
  p.v = mat(env, o, "v");
  p.cache = cache_layout(env, o);
  p.slots = reinterpret_cast<const int64_t*>(buffer(env, o, "slotMapping", p.k.rows * 8));
  enqueue(env, s, "kernels.reshapeAndCache", [p] { return x::kernels::reshape_and_cache(p); });
  return env.Undefined();
}

Napi::Value PagedAttention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  x::kernels::PagedAttentionParams p;
  p.out = mat(env, o, "out");
  p.q = mat(env, o, "q");
  p.cache = cache_layout(env, o);
  p.num_heads = i64(o, "numHeads");
  p.num_seqs = i64(o, "numSeqs");
  p.max_blocks = i64(o, "maxBlocks");
  p.scale = static_cast<float>(num(o, "scale"));
  p.block_tables = reinterpret_cast<const int32_t*>(buffer(env, o, "blockTables", p.num_seqs * p.max_blocks * 4));
  p.seq_lens = reinterpret_cast<const int32_t*>(buffer(env, o, "seqLens", p.num_seqs * 4));
  p.query_start_loc = reinterpret_cast<const int32_t*>(buffer(env, o, "queryStartLoc", (p.num_seqs + 1) * 4));
  enqueue(env, s, "kernels.pagedAttention", [p] { return x::kernels::paged_attention(p); });
  return env.Undefined();
}

std::vector<int32_t> ids_of(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray()) return {};
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

Napi::Value Sample(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  auto p = std::make_shared<x::kernels::SampleParams>();
  p->logits = mat(env, o, "logits");
  const int64_t b = p->logits.rows;
  p->num_top = i64(o, "numTop");
  p->sampled = reinterpret_cast<int32_t*>(buffer(env, o, "sampled", b * 4));
  p->sampled_logprob = reinterpret_cast<float*>(buffer(env, o, "sampledLogprob", b * 4));
  p->sampled_rank = reinterpret_cast<int32_t*>(buffer(env, o, "sampledRank", b * 4));
  p->top_ids = reinterpret_cast<int32_t*>(buffer(env, o, "topIds", b * p->num_top * 4));
  p->top_logprobs = reinterpret_cast<float*>(buffer(env, o, "topLogprobs", b * p->num_top * 4));
  Napi::Array rows = o.Get("rows").As<Napi::Array>();
  p->rows.resize(static_cast<size_t>(b));
  for (uint32_t i = 0; i < rows.Length() && i < b; i++) {
    Napi::Object r = rows.Get(i).As<Napi::Object>();
    auto& row = p->rows[i];
    row.temperature = static_cast<float>(num(r, "temperature"));
    row.top_k = i64(r, "topK");
    row.top_p = static_cast<float>(num(r, "topP"));
    row.min_p = static_cast<float>(num(r, "minP"));
    row.seed = u64(r.Get("seed"), "seed");
    row.step = u64(r.Get("step"), "step");
    row.repetition_penalty = static_cast<float>(num(r, "repetitionPenalty"));
    row.presence_penalty = static_cast<float>(num(r, "presencePenalty"));
    row.frequency_penalty = static_cast<float>(num(r, "frequencyPenalty"));
    row.prompt_ids = ids_of(r, "promptIds");
    row.output_ids = ids_of(r, "outputIds");
    row.bias_ids = ids_of(r, "biasIds");
    row.suppress_ids = ids_of(r, "suppressIds");
    Napi::Value bv = r.Get("biasValues");
    if (bv.IsTypedArray()) {
      Napi::Float32Array a = bv.As<Napi::Float32Array>();
      row.bias_values.assign(a.Data(), a.Data() + a.ElementLength());
    }
  }
  enqueue(env, s, "kernels.sample", [p] { return x::kernels::sample(*p); });
  return env.Undefined();
}

Napi::Value SampleUniform(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), x::kernels::sample_uniform(u64(info[0], "seed"), u64(info[1], "step")));
}

// --- CPU graphs: capture kernels enqueued on a stream, replay them as one stream operation. ---

struct GraphHandle {
  std::shared_ptr<x::kernels::CpuGraph> graph;
};

std::shared_ptr<x::kernels::CpuGraph> graph_of(Napi::Env env, const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(env, "graph: expected a graph handle");
  auto* h = v.As<Napi::External<GraphHandle>>().Data();
  if (h->graph == nullptr) throw_code(env, static_cast<int>(x::Code::kInvalidArgument), "graph: it was disposed");
  return h->graph;
}

Napi::Value BeginCapture(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  std::lock_guard<std::mutex> lock(g_capture_mu);
  if (!g_capturing.emplace(s, std::make_shared<x::kernels::CpuGraph>()).second) {
    throw_code(env, static_cast<int>(x::Code::kInvalidArgument), "beginCapture: the stream is already capturing");
  }
  t_graph = nullptr;
  return env.Undefined();
}

// Ends the capture of a stream; returns the graph, or drops it when info[1] is false (an aborted capture).
Napi::Value EndCapture(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  t_graph = nullptr;
  std::shared_ptr<x::kernels::CpuGraph> graph;
  {
    std::lock_guard<std::mutex> lock(g_capture_mu);
    auto it = g_capturing.find(s);
    if (it == g_capturing.end()) {
      throw_code(env, static_cast<int>(x::Code::kInvalidArgument), "endCapture: the stream is not capturing");
    }
    graph = std::move(it->second);
    g_capturing.erase(it);
  }
  if (!info[1].ToBoolean()) return env.Undefined();
  return Napi::External<GraphHandle>::New(env, new GraphHandle{std::move(graph)},
                                          [](Napi::Env, GraphHandle* h) { delete h; });
}

Napi::Value GraphLaunch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x_stream* s = stream_of(env, info[0]);
  if (t_graph != nullptr) {
    t_graph = nullptr;
    throw_code(env, static_cast<int>(x::Code::kInvalidArgument), "graph.launch: the stream is capturing");
  }
  auto graph = graph_of(env, info[1]);
  // The buffers may have been freed or put to sleep since the capture.
  for (const auto& r : graph->ranges()) check_range(env, r.ptr, r.bytes, r.name.c_str());
  enqueue(env, s, "kernels.graph", [graph] { return graph->run(); });
  return env.Undefined();
}

Napi::Value GraphInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto graph = graph_of(env, info[0]);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ops", Napi::Number::New(env, static_cast<double>(graph->size())));
  o.Set("ranges", Napi::Number::New(env, static_cast<double>(graph->ranges().size())));
  return o;
}

// Drops the handle's reference; launches already enqueued keep theirs until they ran.
Napi::Value GraphDispose(const Napi::CallbackInfo& info) {
  if (info[0].IsExternal()) info[0].As<Napi::External<GraphHandle>>().Data()->graph.reset();
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  x::kernels::binding::register_cuda(env, exports);
  exports.Set("init", Napi::Function::New(env, InitApi));
  exports.Set("embedding", Napi::Function::New(env, Embedding));
  exports.Set("rmsNorm", Napi::Function::New(env, RmsNorm));
  exports.Set("rotaryEmbedding", Napi::Function::New(env, Rotary));
  exports.Set("siluAndMul", Napi::Function::New(env, SiluAndMul));
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("reshapeAndCache", Napi::Function::New(env, ReshapeAndCache));
  exports.Set("pagedAttention", Napi::Function::New(env, PagedAttention));
  exports.Set("sample", Napi::Function::New(env, Sample));
  exports.Set("sampleUniform", Napi::Function::New(env, SampleUniform));
  exports.Set("beginCapture", Napi::Function::New(env, BeginCapture));
  exports.Set("endCapture", Napi::Function::New(env, EndCapture));
  exports.Set("graphLaunch", Napi::Function::New(env, GraphLaunch));
  exports.Set("graphInfo", Napi::Function::New(env, GraphInfo));
  exports.Set("graphDispose", Napi::Function::New(env, GraphDispose));
  return exports;
}

}  // namespace

const x_core_api* x::kernels::binding::core_api(Napi::Env env) { return api(env); }

NODE_API_MODULE(x_kernels, Init)
