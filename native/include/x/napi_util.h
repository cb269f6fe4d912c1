// Node-API helpers shared by x's addons (binding/ code only: includes napi.h).
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "x/status.h"

namespace x::napi {

// A JS Error carrying the Status: `code` (stable), and for CUDA failures `cudaResult`,
// `cudaErrorName` and `operation`. The TS layer maps `code` onto XError subclasses.
inline Napi::Error make_error(Napi::Env env, const Status& st) {
  Napi::Error e = Napi::Error::New(env, st.message);
  e.Set("code", Napi::String::New(env, code_name(st.code)));
  if (st.cuda_result != 0) {
    e.Set("cudaResult", Napi::Number::New(env, st.cuda_result));
    e.Set("cudaErrorName", Napi::String::New(env, cuda::error_name(st.cuda_result)));
  }
  if (!st.operation.empty()) e.Set("operation", Napi::String::New(env, st.operation));
  return e;
}

inline void check(Napi::Env env, const Status& st) {
  if (!st.ok()) throw make_error(env, st);
}

// A bigint or safe-integer number as uint64 (sizes, addresses).
inline uint64_t u64(const Napi::Value& v, const char* name) {
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(v.Env(), std::string(name) + " out of range");
    return r;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d < 0 || d != static_cast<double>(static_cast<uint64_t>(d))) {
      throw Napi::RangeError::New(v.Env(), std::string(name) + " must be a non-negative integer");
    }
    return static_cast<uint64_t>(d);
  }
  throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a bigint or number");
}

// Settles a promise from any thread. `decorate` may add fields to the rejection (main thread).
// `keep_alive`: the pending promise keeps the process alive (work that always finishes, such as a
// sleep or wake). Without it (waits that may never finish), the JS layer's timeout timer does.
using Settle = std::function<void(Status)>;
using Decorate = std::function<void(Napi::Env, Napi::Error&)>;

// Node deletes a thread-safe function when its environment is torn down (a worker thread exiting
// or terminated), even while other threads still hold it, so a completion that arrives later must
// not touch it. The function's finalizer (run on the JS thread just before the delete) clears
// `alive` under `mu`; a settle calls the function only under `mu` while `alive` holds.
struct TsfnLife {
  std::mutex mu;
  bool alive = true;
};

inline Napi::Promise make_promise(Napi::Env env, Settle* settle_out, Decorate decorate = nullptr,
                                  bool keep_alive = false) {
  auto deferred = std::make_shared<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
  Napi::Promise promise = deferred->Promise();
  auto life = std::make_shared<TsfnLife>();
  auto tsfn = Napi::ThreadSafeFunction::New(
      env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "x.settle", 0, 1,
      [life](Napi::Env) {
        std::lock_guard<std::mutex> lock(life->mu);
        life->alive = false;
      });
  if (!keep_alive) tsfn.Unref(env);
  *settle_out = [deferred, tsfn, decorate, life](Status st) mutable {
    // Held across the call: the finalizer (environment teardown) waits for it, never the reverse
    // (the queue is unbounded, so the call does not block on the JS thread).
    std::lock_guard<std::mutex> lock(life->mu);
    if (!life->alive) return;  // the environment is gone; nobody waits any more
    auto* result = new Status(std::move(st));
    auto local = tsfn;
    napi_status s = local.BlockingCall(result, [deferred, decorate](Napi::Env env, Napi::Function, Status* r) {
      std::unique_ptr<Status> owned(r);
      // env is null when the environment is being torn down (a worker exiting): nobody waits.
      if (env == nullptr) return;
      try {
        if (r->ok()) {
          deferred->Resolve(env.Undefined());
        } else {
          Napi::Error e = make_error(env, *r);
          if (decorate) decorate(env, e);
          deferred->Reject(e.Value());
        }
      } catch (const Napi::Error&) {
        // The environment is shutting down and refused the call; there is no one to tell.
      }
    });
    if (s != napi_ok) delete result;  // the environment is gone; nobody waits any more
    local.Release();
  };
  return promise;
}

// Runs `work` on a new native thread (never a libuv pool thread) and settles the promise with
// its Status.
inline Napi::Promise run_on_thread(Napi::Env env, std::function<Status()> work, Decorate decorate = nullptr) {
  Settle settle;
  Napi::Promise p = make_promise(env, &settle, std::move(decorate), /*keep_alive=*/true);
  std::thread([work = std::move(work), settle = std::move(settle)]() mutable { settle(work()); }).detach();
  return p;
}

}  // namespace x::napi
