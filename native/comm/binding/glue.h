// Node-API glue shared by the binding files of @x/comm: results settled from native threads,
// errors carrying rank / op / peer / timeoutMs, store handles and per-environment cleanup.
#pragma once

#include <napi.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../csrc/comm_op.h"
#include "../csrc/kv_store.h"
#include "../csrc/tcp_store.h"
#include "x/core_api.h"
#include "x/napi_util.h"

namespace x::comm::binding {

using x::Code;
using x::Status;

struct Result {
  Status st;
  CommFailure failure;
  std::string str;
  int64_t num = 0;
  bool flag = false;
  std::vector<std::string> list;
  std::vector<std::vector<char>> outputs;  // host forms: what the operation wrote, per written array
};
using Convert = std::function<Napi::Value(Napi::Env, Result&)>;
using Settle = std::function<void(Result)>;

inline Result make_result(Status st, CommFailure f = {}) {
  Result r;
  r.st = std::move(st);
  r.failure = f;
  return r;
}

// A rejection: X_INVALID_ARGUMENT for contract violations, X_NO_DEVICE when NCCL or CUDA is missing, X_TIMEOUT for store waits, otherwise
// X_COMM_ERROR with rank / op / peer / timeoutMs.
inline Napi::Error to_error(Napi::Env env, const Result& r, int rank) {
  if (r.st.code == Code::kInvalidArgument || r.st.code == Code::kNoDevice) return x::napi::make_error(env, r.st);
  Napi::Error e = Napi::Error::New(env, r.st.message);
  bool store_timeout = r.st.code == Code::kTimeout && r.st.operation.rfind("store", 0) == 0;
  e.Set("code", Napi::String::New(env, store_timeout ? "X_TIMEOUT" : "X_COMM_ERROR"));
  e.Set("operation", Napi::String::New(env, r.st.operation));
  e.Set("rank", Napi::Number::New(env, rank));
  if (r.failure.peer >= 0) e.Set("peer", Napi::Number::New(env, r.failure.peer));
  if (r.failure.timeout_ms >= 0) e.Set("timeoutMs", Napi::Number::New(env, static_cast<double>(r.failure.timeout_ms)));
  return e;
}

// Node deletes a thread-safe function when its environment is torn down (a worker thread exiting
// or terminated), even while other threads still hold it, so a completion that arrives later must
// not touch it. The function's finalizer (JS thread, just before the delete) clears `alive` under
// `mu`; a settle calls the function only under `mu` while `alive` holds (as x/napi_util.h does).
struct TsfnLife {
  std::mutex mu;
  bool alive = true;
};

// On the JS thread once the operation is over, whatever its outcome, before the promise settles
// (host forms copy results into their arrays and drop their references here).
using JsDone = std::function<void(Napi::Env, Result&)>;

// A promise settled from any thread, exactly once. The pending promise keeps the event loop open.
// A settle after the environment is gone is dropped: nobody waits any more.
inline Napi::Promise make_pending(Napi::Env env, Convert convert, int rank, Settle* settle_out,
                                  JsDone js_done = nullptr) {
  auto deferred = std::make_shared<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
  Napi::Promise promise = deferred->Promise();
  auto life = std::make_shared<TsfnLife>();
  auto tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                            "x.comm.settle", 0, 1, [life](Napi::Env) {
                                              std::lock_guard<std::mutex> lock(life->mu);
                                              life->alive = false;
                                            });
  *settle_out = [deferred, tsfn, convert, rank, life, js_done](Result res) mutable {
    // Held across the call: the finalizer waits for it, never the reverse (the queue is
    // unbounded, so the call does not block on the JS thread).
    std::lock_guard<std::mutex> lock(life->mu);
    if (!life->alive) return;
    auto* r = new Result(std::move(res));
    auto local = tsfn;
    napi_status s =
        local.BlockingCall(r, [deferred, convert, rank, js_done](Napi::Env env, Napi::Function, Result* p) {
          std::unique_ptr<Result> owned(p);
          if (env == nullptr) return;  // torn down between the call and now
          try {
            if (js_done) js_done(env, *p);
            if (p->st.ok()) deferred->Resolve(convert ? convert(env, *p) : env.Undefined());
            else deferred->Reject(to_error(env, *p, rank).Value());
          } catch (const Napi::Error&) {
            // The environment is shutting down and refused the call; there is no one to tell.
          }
        });
    if (s != napi_ok) delete r;
    local.Release();
  };
  return promise;
}

inline Napi::Promise run_async(Napi::Env env, std::function<void(Result&)> work, Convert convert, int rank = -1) {
  Settle settle;
  Napi::Promise p = make_pending(env, std::move(convert), rank, &settle);
  std::thread([work = std::move(work), settle = std::move(settle)]() mutable {
    Result r;
    try {
      work(r);
    } catch (const std::exception& e) {
      r.st = Status::Error(Code::kInternal, e.what());
    }
    settle(std::move(r));
  }).detach();
  return p;
}

struct StoreHandle {
  std::shared_ptr<KvStore> store;
};
struct ServerHandle {
  std::shared_ptr<x::comm::TcpStoreServer> server;
};

inline std::shared_ptr<KvStore> store_of(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a native store handle");
  return v.As<Napi::External<StoreHandle>>().Data()->store;
}

// @x/core's C table from its address (`core.capi()`). Entries are only ever appended and `size`
// says how many a core fills, so a core is accepted when it fills every entry this addon calls
// (the last one is stream_use_range), also when this addon was built against a longer table.
inline const x_core_api* core_table(Napi::Env env, const Napi::Value& v) {
  auto* core = reinterpret_cast<const x_core_api*>(x::napi::u64(v, "capi"));
  constexpr size_t need = offsetof(x_core_api, stream_use_range) + sizeof(x_core_api::stream_use_range);
  if (core == nullptr || core->version != X_CORE_API_VERSION || core->size < need) {
    x::napi::check(env, Status::Error(Code::kInternal, "@x/core's C table has an unexpected version"));
  }
  return core;
}

// Operation descriptors from JS (packages/comm/src/native.ts NativeOp), read on the JS thread.
inline void* ptr_of(const Napi::Value& v, const char* name) {
  if (v.IsTypedArray()) {
    auto a = v.As<Napi::TypedArray>();
    return static_cast<char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  }
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  return reinterpret_cast<void*>(x::napi::u64(v, name));
}

inline x::comm::OpDesc op_of(const Napi::Object& o) {
  x::comm::OpDesc d;
  d.kind = static_cast<x::comm::OpKind>(o.Get("kind").As<Napi::Number>().Int32Value());
  d.in = ptr_of(o.Get("in"), "in");
  d.out = ptr_of(o.Get("out"), "out");
  d.count = static_cast<size_t>(o.Get("count").As<Napi::Number>().Int64Value());
  d.dtype = static_cast<x::comm::DType>(o.Get("dtype").As<Napi::Number>().Int32Value());
  d.reduce = static_cast<x::comm::ReduceOp>(o.Get("reduce").As<Napi::Number>().Int32Value());
  d.root = o.Get("root").As<Napi::Number>().Int32Value();
  d.tag = o.Get("tag").As<Napi::Number>().Uint32Value();
  d.timeout_ms = o.Get("timeoutMs").As<Napi::Number>().Int64Value();
  Napi::Value items = o.Get("items");
  if (items.IsArray()) {
    Napi::Array a = items.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Object it = a.Get(i).As<Napi::Object>();
      x::comm::P2P p;
      p.send = it.Get("send").ToBoolean();
      p.ptr = ptr_of(it.Get("ptr"), "ptr");
      p.count = static_cast<size_t>(it.Get("count").As<Napi::Number>().Int64Value());
      p.dtype = static_cast<x::comm::DType>(it.Get("dtype").As<Napi::Number>().Int32Value());
      p.peer = it.Get("peer").As<Napi::Number>().Int32Value();
      p.tag = it.Get("tag").As<Napi::Number>().Uint32Value();
      d.items.push_back(p);
    }
  }
  return d;
}

// The memory a tensor-form operation touches: (address, bytes, argument name).
struct Range {
  void* ptr;
  size_t bytes;
  const char* what;
};
inline std::vector<Range> op_ranges(const x::comm::OpDesc& op, int size) {
  using x::comm::OpKind;
  const size_t n = op.count * x::comm::dtype_size(op.dtype);
  switch (op.kind) {
    case OpKind::kAllReduce:
    case OpKind::kBroadcast:
    case OpKind::kSend:
    case OpKind::kRecv: return {{op.in, n, "data"}};
    case OpKind::kAllGather: return {{op.in, n, "input"}, {op.out, n * size, "output"}};
    case OpKind::kReduceScatter: return {{op.in, n * size, "input"}, {op.out, n, "output"}};
    case OpKind::kExchange: {
      std::vector<Range> r;
      for (auto& it : op.items) r.push_back({it.ptr, it.count * x::comm::dtype_size(it.dtype), "items[].data"});
      return r;
    }
    case OpKind::kBarrier: break;
  }
  return {};
}

// Declares to @x/core the memory a tensor-form operation will touch on `stream` (the C table's
// stream_use_range): unknown memory or a sleeping @x/cumem tag is refused with a typed error
// (InvalidArgumentError, AsleepError) before anything is enqueued, and while a CUDA stream
// captures a graph the ranges are recorded so every launch of the graph re-checks them.
inline void use_ranges(Napi::Env env, const x_core_api* core, x_stream* stream, const x::comm::OpDesc& op,
                       int size) {
  for (const Range& r : op_ranges(op, size)) {
    int rc = core->stream_use_range(stream, reinterpret_cast<uint64_t>(r.ptr), r.bytes, r.what);
    if (rc != X_SUCCESS) x::napi::check(env, Status::Error(static_cast<Code>(rc), core->last_error()));
  }
}

// Per environment (main thread or worker): what must be closed when it goes away.
struct EnvState {
  std::mutex mu;
  std::vector<std::function<void()>> cleanups;  // each holds a weak_ptr to what it closes
  void add(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu);
    cleanups.push_back(std::move(fn));
  }
};

// Adds the NCCL functions (binding/nccl_binding.cc) to the addon's exports.
void register_nccl(Napi::Env env, Napi::Object exports);

}  // namespace x::comm::binding
