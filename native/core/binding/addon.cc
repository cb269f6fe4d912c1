// Node-API glue for @x/core. Converts JS arguments to plain C++ values, calls csrc/, and turns a
// failed Status into a JS error carrying a stable `code` (mapped to XError subclasses in TS).
// Nothing here touches JS values off the main thread: completions come back through
// thread-safe functions.
#include <napi.h>

#include <memory>
#include <mutex>
#include <vector>

#include "../csrc/device.h"
#include "../csrc/handles.h"
#include "../csrc/host_buffer.h"
#include "../csrc/registry.h"
#include "../csrc/stream.h"
#include "x/napi_util.h"

namespace {

using x::Status;

using x::napi::check;
using x::napi::make_error;
using x::napi::u64;

Napi::BigInt big(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

// Per-environment state: the CPU streams this environment created, stopped at teardown so worker
// threads that exit never leave stream threads running (other environments' streams are untouched).
struct EnvState {
  std::mutex mu;
  std::vector<std::weak_ptr<x::Stream>> streams;
};

void cleanup_env(void* arg) {
  auto* st = static_cast<EnvState*>(arg);
  std::vector<std::shared_ptr<x::Stream>> live;
  {
    std::lock_guard<std::mutex> lock(st->mu);
    for (auto& w : st->streams) {
      if (auto s = w.lock()) live.push_back(s);
    }
  }
  for (auto& s : live) s->stop_and_join(2000);
  delete st;
}

void keep_env_state(Napi::Env, EnvState*) {}

EnvState* env_state(Napi::Env env) { return env.GetInstanceData<EnvState>(); }

x_stream* stream_of(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a native stream handle");
  return v.As<Napi::External<x_stream>>().Data();
}
x_event* event_of(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a native event handle");
  return v.As<Napi::External<x_event>>().Data();
}

Napi::Value promise_from_waiter(Napi::Env env, const std::function<void(x::Waiter)>& start) {
  x::napi::Settle settle;
  Napi::Promise p = x::napi::make_promise(env, &settle);
  start(std::move(settle));
  return p;
}

// ---- build, driver, devices ----

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cudaKernels", Napi::Boolean::New(env, x::kernels_compiled_in()));
  o.Set("cudaArchitectures", Napi::String::New(env, x::kernel_architectures()));
  o.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  o.Set("capiVersion", Napi::Number::New(env, X_CORE_API_VERSION));
#if defined(__clang__)
  o.Set("compiler", Napi::String::New(env, std::string("clang ") + __clang_version__));
#elif defined(__GNUC__)
  o.Set("compiler", Napi::String::New(env, std::string("gcc ") + __VERSION__));
#endif
  return o;
}

Napi::Value DriverInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const x::cuda::DriverLoad& l = x::cuda::load_driver();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", Napi::Boolean::New(env, l.driver != nullptr));
  o.Set("library", Napi::String::New(env, l.library));
  o.Set("version", Napi::Number::New(env, l.version));
  o.Set("reason", Napi::String::New(env, l.why));
  return o;
}

Napi::Value CudaDevices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = 0;
  check(env, x::device_count(&n));
  Napi::Array arr = Napi::Array::New(env, n);
  for (int i = 0; i < n; i++) {
    x::CudaDeviceInfo d;
    check(env, x::device_info(i, &d));
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", d.index);
    o.Set("name", d.name);
    o.Set("totalBytes", Napi::Number::New(env, static_cast<double>(d.total_bytes)));
    o.Set("freeBytes", Napi::Number::New(env, static_cast<double>(d.free_bytes)));
    o.Set("computeCapability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
    o.Set("multiprocessors", d.multiprocessors);
    o.Set("virtualMemoryManagement", d.vmm_supported);
    arr.Set(i, o);
  }
  return arr;
}

Napi::Value CudaMemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x::CudaDeviceInfo d;
  check(env, x::device_info(info[0].As<Napi::Number>().Int32Value(), &d));
  Napi::Object o = Napi::Object::New(env);
  o.Set("freeBytes", Napi::Number::New(env, static_cast<double>(d.free_bytes)));
  o.Set("totalBytes", Napi::Number::New(env, static_cast<double>(d.total_bytes)));
  return o;
}

// ---- streams ----

Napi::Value CreateStream(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = info[0].As<Napi::Number>().Int32Value();
  x::StreamOptions opts;
  opts.record_ops = info[1].ToBoolean();
  std::shared_ptr<x::Stream> s;
  check(env, x::create_stream(device, opts, &s));
  {
    EnvState* st = env_state(env);
    std::lock_guard<std::mutex> lock(st->mu);
    std::erase_if(st->streams, [](auto& w) { return w.expired(); });
    st->streams.push_back(s);
  }
  // The GC finalizer closes the stream: queued work still runs, then its thread exits.
  return Napi::External<x_stream>::New(env, new x_stream{std::move(s)}, [](Napi::Env, x_stream* h) {
    h->stream->close();
    delete h;
  });
}

Napi::Value Handle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return big(env, reinterpret_cast<uint64_t>(info[0].As<Napi::External<void>>().Data()));
}

Napi::Value StreamCopy(const Napi::CallbackInfo& info) {
  check(info.Env(), stream_of(info[0])->stream->copy(u64(info[1], "dst"), u64(info[2], "src"),
                                                     u64(info[3], "bytes")));
  return info.Env().Undefined();
}

Napi::Value StreamFill(const Napi::CallbackInfo& info) {
  check(info.Env(), stream_of(info[0])->stream->fill(u64(info[1], "dst"), u64(info[2], "bytes"),
                                                     u64(info[3], "pattern"),
                                                     info[4].As<Napi::Number>().Int32Value()));
  return info.Env().Undefined();
}

Napi::Value StreamDelay(const Napi::CallbackInfo& info) {
  check(info.Env(), stream_of(info[0])->stream->delay(u64(info[1], "ns")));
  return info.Env().Undefined();
}

Napi::Value StreamRecord(const Napi::CallbackInfo& info) {
  check(info.Env(), stream_of(info[0])->stream->record(*event_of(info[1])->event));
  return info.Env().Undefined();
}

Napi::Value StreamWaitEvent(const Napi::CallbackInfo& info) {
  check(info.Env(), stream_of(info[0])->stream->wait_event(*event_of(info[1])->event));
  return info.Env().Undefined();
}

Napi::Value StreamSynchronizeSync(const Napi::CallbackInfo& info) {
  auto ns = static_cast<int64_t>(info[1].As<Napi::Number>().DoubleValue() * 1e6);
  check(info.Env(), stream_of(info[0])->stream->synchronize(ns));
  return info.Env().Undefined();
}

Napi::Value StreamWait(const Napi::CallbackInfo& info) {
  std::shared_ptr<x::Stream> s = stream_of(info[0])->stream;
  return promise_from_waiter(info.Env(), [s](x::Waiter w) { s->add_waiter(std::move(w)); });
}

Napi::Value StreamCompletedOps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto ops = stream_of(info[0])->stream->completed_ops();
  Napi::Array arr = Napi::Array::New(env, ops.size());
  for (size_t i = 0; i < ops.size(); i++) arr.Set(i, ops[i]);
  return arr;
}

Napi::Value StreamClose(const Napi::CallbackInfo& info) {
  stream_of(info[0])->stream->close();
  return info.Env().Undefined();
}

// ---- graphs ----

x_graph* graph_of(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a native graph handle");
  return v.As<Napi::External<x_graph>>().Data();
}

// streamBeginCapture(stream, mode): mode 1 = thread-local, 2 = relaxed.
Napi::Value StreamBeginCapture(const Napi::CallbackInfo& info) {
  check(info.Env(), stream_of(info[0])->stream->begin_capture(info[1].As<Napi::Number>().Int32Value()));
  return info.Env().Undefined();
}

// streamEndCapture(stream) -> [graph handle, nodes, ranges]
Napi::Value StreamEndCapture(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<x::CudaGraph> g;
  check(env, stream_of(info[0])->stream->end_capture(&g));
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(1u, Napi::Number::New(env, static_cast<double>(g->nodes())));
  out.Set(2u, Napi::Number::New(env, static_cast<double>(g->ranges())));
  out.Set(0u, Napi::External<x_graph>::New(env, new x_graph{std::move(g)},
                                           [](Napi::Env, x_graph* h) { delete h; }));
  return out;
}

Napi::Value StreamCapturing(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), stream_of(info[0])->stream->capturing());
}

Napi::Value GraphLaunch(const Napi::CallbackInfo& info) {
  x_graph* g = graph_of(info[0]);
  if (!g->graph) throw Napi::Error::New(info.Env(), "the graph was disposed");
  check(info.Env(), g->graph->launch(*stream_of(info[1])->stream));
  return info.Env().Undefined();
}

// Releases the executable graph now (launches in flight still finish).
Napi::Value GraphDispose(const Napi::CallbackInfo& info) {
  graph_of(info[0])->graph.reset();
  return info.Env().Undefined();
}

// ---- events ----

Napi::Value CreateEvent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<x::Event> e;
  check(env, x::create_event(info[0].As<Napi::Number>().Int32Value(), info[1].ToBoolean(), &e));
  return Napi::External<x_event>::New(env, new x_event{std::move(e)},
                                      [](Napi::Env, x_event* h) { delete h; });
}

Napi::Value EventQuery(const Napi::CallbackInfo& info) {
  bool done = false;
  check(info.Env(), event_of(info[0])->event->query(&done));
  return Napi::Boolean::New(info.Env(), done);
}

Napi::Value EventWait(const Napi::CallbackInfo& info) {
  std::shared_ptr<x::Event> e = event_of(info[0])->event;
  return promise_from_waiter(info.Env(), [e](x::Waiter w) { e->add_waiter(std::move(w)); });
}

Napi::Value EventSynchronizeSync(const Napi::CallbackInfo& info) {
  auto ns = static_cast<int64_t>(info[1].As<Napi::Number>().DoubleValue() * 1e6);
  check(info.Env(), event_of(info[0])->event->synchronize(ns));
  return info.Env().Undefined();
}

Napi::Value EventElapsed(const Napi::CallbackInfo& info) {
  double ms = 0;
  check(info.Env(), event_of(info[0])->event->elapsed_ms(*event_of(info[1])->event, &ms));
  return Napi::Number::New(info.Env(), ms);
}

// ---- host memory ----

struct HostBlock {
  int device;
  uint64_t ptr;
  uint64_t bytes;
  bool freed = false;
};

// Returns [ptr, ArrayBuffer, block]. The ArrayBuffer aliases the memory; its finalizer frees the
// memory if dispose() never did, so a view can never outlive the bytes it points at.
Napi::Value HostAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = info[0].As<Napi::Number>().Int32Value();
  uint64_t bytes = u64(info[1], "bytes");
  uint64_t ptr = 0;
  check(env, x::host_alloc(device, bytes, &ptr));
  auto* block = new HostBlock{device, ptr, bytes};
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, reinterpret_cast<void*>(ptr), bytes, [](Napi::Env, void*, HostBlock* b) {
        if (!b->freed) x::host_free(b->device, b->ptr, b->bytes);
        delete b;
      }, block);
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(0u, big(env, ptr));
  out.Set(1u, ab);
  out.Set(2u, Napi::External<HostBlock>::New(env, block));
  return out;
}

// Detaches the ArrayBuffer (views become empty) and frees the memory now.
Napi::Value HostFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  HostBlock* b = info[1].As<Napi::External<HostBlock>>().Data();
  if (b->freed) return env.Undefined();
  ab.Detach();
  b->freed = true;
  check(env, x::host_free(b->device, b->ptr, b->bytes));
  return env.Undefined();
}

Napi::Value DeviceAllocForTesting(const Napi::CallbackInfo& info) {
  uint64_t ptr = 0;
  check(info.Env(), x::device_alloc_for_testing(info[0].As<Napi::Number>().Int32Value(),
                                                u64(info[1], "bytes"), &ptr));
  return big(info.Env(), ptr);
}

Napi::Value DeviceFreeForTesting(const Napi::CallbackInfo& info) {
  check(info.Env(), x::device_free_for_testing(info[0].As<Napi::Number>().Int32Value(),
                                               u64(info[1], "ptr")));
  return info.Env().Undefined();
}

Napi::Value Capi(const Napi::CallbackInfo& info) {
  return big(info.Env(), reinterpret_cast<uint64_t>(x::core_api()));
}

Napi::Value Ranges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto ranges = x::MemoryRegistry::instance().snapshot();
  Napi::Array arr = Napi::Array::New(env, ranges.size());
  for (size_t i = 0; i < ranges.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("device", ranges[i].device);
    o.Set("base", big(env, ranges[i].base));
    o.Set("size", big(env, ranges[i].size));
    const char* states[] = {"unmapped", "mapped", "draining"};
    o.Set("state", states[static_cast<int>(ranges[i].state)]);
    o.Set("owner", ranges[i].owner);
    arr.Set(i, o);
  }
  return arr;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* state = new EnvState();
  env.SetInstanceData<EnvState, keep_env_state>(state);  // freed by cleanup_env
  napi_add_env_cleanup_hook(env, cleanup_env, state);
  struct Fn {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  };
  const Fn fns[] = {
      {"buildInfo", BuildInfo},
      {"driverInfo", DriverInfo},
      {"cudaDevices", CudaDevices},
      {"cudaMemInfo", CudaMemInfo},
      {"createStream", CreateStream},
      {"handle", Handle},
      {"streamCopy", StreamCopy},
      {"streamFill", StreamFill},
      {"streamDelay", StreamDelay},
      {"streamRecord", StreamRecord},
      {"streamWaitEvent", StreamWaitEvent},
      {"streamSynchronizeSync", StreamSynchronizeSync},
      {"streamWait", StreamWait},
      {"streamCompletedOps", StreamCompletedOps},
      {"streamClose", StreamClose},
      {"streamBeginCapture", StreamBeginCapture},
      {"streamEndCapture", StreamEndCapture},
      {"streamCapturing", StreamCapturing},
      {"graphLaunch", GraphLaunch},
      {"graphDispose", GraphDispose},
      {"createEvent", CreateEvent},
      {"eventQuery", EventQuery},
      {"eventWait", EventWait},
      {"eventSynchronizeSync", EventSynchronizeSync},
      {"eventElapsed", EventElapsed},
      {"hostAlloc", HostAlloc},
      {"hostFree", HostFree},
      {"deviceAllocForTesting", DeviceAllocForTesting},
      {"deviceFreeForTesting", DeviceFreeForTesting},
      {"capi", Capi},
      {"ranges", Ranges},
  };
  for (const Fn& f : fns) exports.Set(f.name, Napi::Function::New(env, f.fn, f.name));
  return exports;
}

}  // namespace

NODE_API_MODULE(x_core, Init)
