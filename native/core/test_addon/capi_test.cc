// A second addon that uses @x/core's streams and events only through the C function table, the
// way @x/cumem, @x/comm and user addons do. Built for the tests; not shipped.
#include <napi.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "x/core_api.h"

namespace {

const x_core_api* table_of(const Napi::Value& v) {
  bool lossless = true;
  return reinterpret_cast<const x_core_api*>(v.As<Napi::BigInt>().Uint64Value(&lossless));
}
template <typename T>
T* handle_of(const Napi::Value& v) {
  bool lossless = true;
  return reinterpret_cast<T*>(v.As<Napi::BigInt>().Uint64Value(&lossless));
}

void fail(Napi::Env env, const x_core_api* api, int rc) {
  if (rc != X_SUCCESS) {
    Napi::Error e = Napi::Error::New(env, api->last_error());
    e.Set("status", Napi::Number::New(env, rc));
    throw e;
  }
}

struct CopyWord {
  uint32_t* src;
  uint32_t* dst;
  uint32_t add;
  std::atomic<int>* cleanups;
};

// version(capi) -> { version, size }
Napi::Value Version(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("version", api->version);
  o.Set("size", api->size);
  o.Set("expectedSize", static_cast<uint32_t>(sizeof(x_core_api)));
  return o;
}

std::atomic<int> g_cleanups{0};

// enqueueCopyWord(capi, stream, src, dst, add): in stream order, *dst = *src + add.
Napi::Value EnqueueCopyWord(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  auto* call = new CopyWord{handle_of<uint32_t>(info[2]), handle_of<uint32_t>(info[3]),
                            info[4].As<Napi::Number>().Uint32Value(), &g_cleanups};
  int rc = api->stream_enqueue_host(
      handle_of<x_stream>(info[1]),
      [](void* p) {
        auto* c = static_cast<CopyWord*>(p);
        *c->dst = *c->src + c->add;
        return 0;
      },
      [](void* p) {
        auto* c = static_cast<CopyWord*>(p);
        c->cleanups->fetch_add(1);
        delete c;
      },
      call, "capi_test.copyWord");
  if (rc != X_SUCCESS) delete call;
  fail(info.Env(), api, rc);
  return info.Env().Undefined();
}

// enqueueFailure(capi, stream): a host function that reports failure.
Napi::Value EnqueueFailure(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  fail(info.Env(), api,
       api->stream_enqueue_host(handle_of<x_stream>(info[1]), [](void*) { return 7; }, nullptr,
                                nullptr, "capi_test.fail"));
  return info.Env().Undefined();
}

Napi::Value Cleanups(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), g_cleanups.load());
}

// recordAndSync(capi, stream, timeoutMs): records an event the table created, synchronizes it
// from this addon, and reports whether the query said done.
Napi::Value RecordAndSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const x_core_api* api = table_of(info[0]);
  x_stream* s = handle_of<x_stream>(info[1]);
  int device = 0;
  fail(env, api, api->stream_device(s, &device));
  x_event* ev = nullptr;
  fail(env, api, api->event_create(device, &ev));
  int rc = api->event_record(ev, s);
  if (rc == X_SUCCESS) {
    rc = api->event_synchronize(ev, static_cast<int64_t>(info[2].As<Napi::Number>().DoubleValue() * 1e6));
  }
  int done = 0;
  if (rc == X_SUCCESS) rc = api->event_query(ev, &done);
  api->event_destroy(ev);
  fail(env, api, rc);
  return Napi::Boolean::New(env, done == 1);
}

// waitThenCopy(capi, stream, event, src, dst): stream waits on a JS-created event, then copies.
Napi::Value WaitEvent(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  fail(info.Env(), api, api->stream_wait_event(handle_of<x_stream>(info[1]), handle_of<x_event>(info[2])));
  return info.Env().Undefined();
}

// registerRange / setRangeState / unregisterRange / checkRange pass through to the table.
Napi::Value RegisterRange(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  bool l = true;
  std::string owner = info[4].As<Napi::String>().Utf8Value();
  fail(info.Env(), api,
       api->register_range(info[1].As<Napi::Number>().Int32Value(), info[2].As<Napi::BigInt>().Uint64Value(&l),
                           info[3].As<Napi::BigInt>().Uint64Value(&l), X_RANGE_MAPPED, owner.c_str()));
  return info.Env().Undefined();
}
Napi::Value SetRangeState(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  bool l = true;
  fail(info.Env(), api,
       api->set_range_state(info[1].As<Napi::Number>().Int32Value(), info[2].As<Napi::BigInt>().Uint64Value(&l),
                            info[3].As<Napi::Number>().Int32Value()));
  return info.Env().Undefined();
}
Napi::Value UnregisterRange(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  bool l = true;
  fail(info.Env(), api,
       api->unregister_range(info[1].As<Napi::Number>().Int32Value(), info[2].As<Napi::BigInt>().Uint64Value(&l)));
  return info.Env().Undefined();
}
Napi::Value CheckRange(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  bool l = true;
  return Napi::Number::New(info.Env(),
                           api->check_range(info[1].As<Napi::Number>().Int32Value(),
                                            info[2].As<Napi::BigInt>().Uint64Value(&l),
                                            info[3].As<Napi::BigInt>().Uint64Value(&l)));
}

// useRange(capi, stream, ptr, size) -> status code of stream_use_range
Napi::Value UseRange(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  bool l = true;
  return Napi::Number::New(info.Env(),
                           api->stream_use_range(handle_of<x_stream>(info[1]),
                                                 info[2].As<Napi::BigInt>().Uint64Value(&l),
                                                 info[3].As<Napi::BigInt>().Uint64Value(&l), "test"));
}

// ---- memory lifetime under running host functions (stream_enqueue_host_ranges, retire_range) ----

// What the slow writers and the release of a retired region saw, in order.
std::atomic<int> g_writes_started{0}, g_writes_done{0}, g_write_cleanups{0}, g_releases{0};
std::atomic<int> g_done_at_release{-1};

struct SlowWrite {
  uint8_t* p;
  uint64_t bytes;
  int ms;
  uint8_t value;
};

// allocRegion(capi, bytes) -> ptr: memory this addon owns, registered with the core as mapped.
Napi::Value AllocRegion(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  uint64_t bytes = info[1].As<Napi::Number>().Uint32Value();
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw Napi::Error::New(info.Env(), "mmap failed");
  int rc = api->register_range(X_DEVICE_CPU, reinterpret_cast<uint64_t>(p), bytes, X_RANGE_MAPPED, "capi_test.region");
  if (rc != X_SUCCESS) munmap(p, bytes);
  fail(info.Env(), api, rc);
  return Napi::BigInt::New(info.Env(), reinterpret_cast<uint64_t>(p));
}

// enqueueSlowWrite(capi, stream, ptr, bytes, ms, value): a host function declaring [ptr, bytes)
// that takes `ms` milliseconds, writing `value` over the region all the while.
Napi::Value EnqueueSlowWrite(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  bool l = true;
  auto* w = new SlowWrite{handle_of<uint8_t>(info[2]), info[3].As<Napi::Number>().Uint32Value(),
                          info[4].As<Napi::Number>().Int32Value(),
                          static_cast<uint8_t>(info[5].As<Napi::Number>().Uint32Value())};
  x_range range{info[2].As<Napi::BigInt>().Uint64Value(&l), w->bytes, "region"};
  int rc = api->stream_enqueue_host_ranges(
      handle_of<x_stream>(info[1]),
      [](void* u) {
        auto* w = static_cast<SlowWrite*>(u);
        g_writes_started.fetch_add(1);
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(w->ms);
        do {
          std::memset(w->p, w->value, w->bytes);  // faults if the region were unmapped under it
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        } while (std::chrono::steady_clock::now() < end);
        g_writes_done.fetch_add(1);
        return 0;
      },
      [](void* u) {
        g_write_cleanups.fetch_add(1);
        delete static_cast<SlowWrite*>(u);
      },
      w, "capi_test.slowWrite", &range, 1);
  if (rc != X_SUCCESS) delete w;
  fail(info.Env(), api, rc);
  return info.Env().Undefined();
}

struct Region {
  void* p;
  uint64_t bytes;
};

// retireRegion(capi, ptr, bytes) -> whether the region was released before the call returned.
Napi::Value RetireRegion(const Napi::CallbackInfo& info) {
  const x_core_api* api = table_of(info[0]);
  bool l = true;
  uint64_t ptr = info[1].As<Napi::BigInt>().Uint64Value(&l);
  int before = g_releases.load();
  auto* r = new Region{reinterpret_cast<void*>(ptr), info[2].As<Napi::Number>().Uint32Value()};
  int rc = api->retire_range(X_DEVICE_CPU, ptr, [](void* u) {
    auto* r = static_cast<Region*>(u);
    g_done_at_release.store(g_writes_done.load());
    munmap(r->p, r->bytes);
    delete r;
    g_releases.fetch_add(1);
  }, r);
  if (rc != X_SUCCESS) delete r;
  fail(info.Env(), api, rc);
  return Napi::Boolean::New(info.Env(), g_releases.load() != before);
}

Napi::Value LifetimeState(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("started", g_writes_started.load());
  o.Set("done", g_writes_done.load());
  o.Set("cleanups", g_write_cleanups.load());
  o.Set("releases", g_releases.load());
  o.Set("doneAtRelease", g_done_at_release.load());
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("allocRegion", Napi::Function::New(env, AllocRegion));
  exports.Set("enqueueSlowWrite", Napi::Function::New(env, EnqueueSlowWrite));
  exports.Set("retireRegion", Napi::Function::New(env, RetireRegion));
  exports.Set("lifetimeState", Napi::Function::New(env, LifetimeState));
  exports.Set("version", Napi::Function::New(env, Version));
  exports.Set("enqueueCopyWord", Napi::Function::New(env, EnqueueCopyWord));
  exports.Set("enqueueFailure", Napi::Function::New(env, EnqueueFailure));
  exports.Set("cleanups", Napi::Function::New(env, Cleanups));
  exports.Set("recordAndSync", Napi::Function::New(env, RecordAndSync));
  exports.Set("waitEvent", Napi::Function::New(env, WaitEvent));
  exports.Set("registerRange", Napi::Function::New(env, RegisterRange));
  exports.Set("setRangeState", Napi::Function::New(env, SetRangeState));
  exports.Set("unregisterRange", Napi::Function::New(env, UnregisterRange));
  exports.Set("checkRange", Napi::Function::New(env, CheckRange));
  exports.Set("useRange", Napi::Function::New(env, UseRange));
  return exports;
}

}  // namespace

NODE_API_MODULE(x_core_capi_test, Init)
