// A second addon that uses @x/core's streams and events only through the C function table, the
// way @x/cumem, @x/comm and user addons do. Built for the tests; not shipped.
#include <napi.h>

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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
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
