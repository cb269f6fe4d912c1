// Node-API glue for @x/cumem: plain C++ values in, Pool calls, typed errors out. Sleep and wake run
// on their own native thread and settle a promise.
#include <napi.h>

#include <mutex>
#include <vector>

#include "../csrc/pool.h"
#include "x/napi_util.h"

namespace {

using x::Status;
using x::cumem::Pool;
using x::napi::check;
using x::napi::u64;

struct PoolHandle {
  std::shared_ptr<Pool> pool;
};

// Pools of this environment, shut down at teardown so exiting workers leak nothing.
struct EnvState {
  std::mutex mu;
  std::vector<std::weak_ptr<Pool>> pools;
};
void keep_env_state(Napi::Env, EnvState*) {}
void cleanup_env(void* arg) {
  auto* st = static_cast<EnvState*>(arg);
  for (auto& w : st->pools) {
    if (auto p = w.lock()) p->shutdown();
  }
  delete st;
}

std::shared_ptr<Pool> pool_of(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a native pool handle");
  return v.As<Napi::External<PoolHandle>>().Data()->pool;
}

std::vector<uint64_t> vas_of(const Napi::Value& v) {
  Napi::Array a = v.As<Napi::Array>();
  std::vector<uint64_t> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) out[i] = u64(a.Get(i), "va");
  return out;
}

Napi::Value CreatePool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = info[0].As<Napi::Number>().Int32Value();
  auto* core = reinterpret_cast<const x_core_api*>(u64(info[1], "capi"));
  std::shared_ptr<Pool> pool;
  check(env, Pool::create(device, core, &pool));
  EnvState* st = env.GetInstanceData<EnvState>();
  {
    std::lock_guard<std::mutex> lock(st->mu);
    st->pools.push_back(pool);
  }
  return Napi::External<PoolHandle>::New(env, new PoolHandle{pool}, [](Napi::Env, PoolHandle* h) {
    h->pool->shutdown();  // garbage-collected without dispose(): free everything it holds
    delete h;
  });
}

Napi::Value Granularity(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(pool_of(info[0])->granularity()));
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t va = 0, padded = 0;
  check(env, pool_of(info[0])->alloc(u64(info[1], "bytes"), info[2].ToBoolean(),
                                     info[3].As<Napi::String>().Utf8Value(), &va, &padded));
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::BigInt::New(env, va));
  out.Set(1u, Napi::Number::New(env, static_cast<double>(padded)));
  return out;
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  check(info.Env(), pool_of(info[0])->free(u64(info[1], "va")));
  return info.Env().Undefined();
}

Napi::Value SetState(const Napi::CallbackInfo& info) {
  check(info.Env(), pool_of(info[0])->set_state(vas_of(info[1]), info[2].As<Napi::Number>().Int32Value()));
  return info.Env().Undefined();
}

// sleep(pool, [{va, offload: 0|1|2, path, reuse}]) -> Promise<void>
Napi::Value Sleep(const Napi::CallbackInfo& info) {
  auto pool = pool_of(info[0]);
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<x::cumem::SleepItem> items(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Object o = a.Get(i).As<Napi::Object>();
    items[i].va = u64(o.Get("va"), "va");
    items[i].offload = static_cast<x::cumem::BackupKind>(o.Get("offload").As<Napi::Number>().Int32Value());
    if (o.Has("path")) items[i].path = o.Get("path").As<Napi::String>().Utf8Value();
    items[i].reuse_valid_backup = o.Get("reuse").ToBoolean();
  }
  return x::napi::run_on_thread(info.Env(), [pool, items = std::move(items)] { return pool->sleep(items); });
}

// wake(pool, [{va, restore, poison, keepBackup}]) -> Promise<void>; rejects with `failedVa` on OOM.
Napi::Value Wake(const Napi::CallbackInfo& info) {
  auto pool = pool_of(info[0]);
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<x::cumem::WakeItem> items(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Object o = a.Get(i).As<Napi::Object>();
    items[i].va = u64(o.Get("va"), "va");
    items[i].restore = o.Get("restore").ToBoolean();
    items[i].poison = o.Get("poison").ToBoolean();
    items[i].keep_backup = o.Get("keepBackup").ToBoolean();
    items[i].retain_host = o.Get("retainHost").ToBoolean();
  }
  auto failed = std::make_shared<uint64_t>(0);
  return x::napi::run_on_thread(
      info.Env(), [pool, items = std::move(items), failed] { return pool->wake(items, failed.get()); },
      [failed](Napi::Env env, Napi::Error& e) {
        if (*failed != 0) e.Set("failedVa", Napi::BigInt::New(env, *failed));
      });
}

Napi::Value ReserveBackups(const Napi::CallbackInfo& info) {
  auto pool = pool_of(info[0]);
  std::vector<uint64_t> vas = vas_of(info[1]);
  return x::napi::run_on_thread(info.Env(), [pool, vas = std::move(vas)] { return pool->reserve_backups(vas); });
}

Napi::Value DropBackup(const Napi::CallbackInfo& info) {
  pool_of(info[0])->drop_backup(u64(info[1], "va"));
  return info.Env().Undefined();
}

Napi::Value MarkDirty(const Napi::CallbackInfo& info) {
  pool_of(info[0])->mark_dirty(u64(info[1], "va"));
  return info.Env().Undefined();
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  x::cumem::RecordInfo r;
  check(env, pool_of(info[0])->info(u64(info[1], "va"), &r));
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", Napi::Number::New(env, static_cast<double>(r.size)));
  o.Set("padded", Napi::Number::New(env, static_cast<double>(r.padded)));
  o.Set("mapped", Napi::Boolean::New(env, r.mapped));
  o.Set("backedUp", Napi::Number::New(env, static_cast<double>(r.backed_up)));
  o.Set("hostReserved", Napi::Number::New(env, static_cast<double>(r.host_reserved)));
  return o;
}

Napi::Value InjectMapFailure(const Napi::CallbackInfo& info) {
  pool_of(info[0])->inject_map_failure(info[1].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  pool_of(info[0])->shutdown();
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* state = new EnvState();
  env.SetInstanceData<EnvState, keep_env_state>(state);
  napi_add_env_cleanup_hook(env, cleanup_env, state);
  exports.Set("createPool", Napi::Function::New(env, CreatePool));
  exports.Set("granularity", Napi::Function::New(env, Granularity));
  exports.Set("alloc", Napi::Function::New(env, Alloc));
  exports.Set("free", Napi::Function::New(env, Free));
  exports.Set("setState", Napi::Function::New(env, SetState));
  exports.Set("sleep", Napi::Function::New(env, Sleep));
  exports.Set("wake", Napi::Function::New(env, Wake));
  exports.Set("reserveBackups", Napi::Function::New(env, ReserveBackups));
  exports.Set("dropBackup", Napi::Function::New(env, DropBackup));
  exports.Set("markDirty", Napi::Function::New(env, MarkDirty));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("injectMapFailure", Napi::Function::New(env, InjectMapFailure));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown));
  return exports;
}

}  // namespace

NODE_API_MODULE(x_cumem, Init)
