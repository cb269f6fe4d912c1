// Node-API glue for @x/comm: JS values become plain structs on the JS thread; stores, rendezvous
// and collectives run on native threads (a CPU stream's thread, or a short-lived thread for store
// calls) and settle promises through thread-safe functions. Failures carry rank / op / peer /
// timeoutMs so the TS layer can raise CommError.
#include <napi.h>

#include <mutex>
#include <thread>
#include <vector>

#include "../csrc/file_store.h"
#include "../csrc/gloo_group.h"
#include "../csrc/tcp_store.h"
#include "x/core_api.h"
#include "x/napi_util.h"

namespace {

using x::Code;
using x::Status;
using x::comm::CommFailure;
using x::comm::Group;
using x::comm::KvStore;
using x::napi::check;
using x::napi::u64;

struct Result {
  Status st;
  CommFailure failure;
  std::string str;
  int64_t num = 0;
  bool flag = false;
  std::vector<std::string> list;
};
using Convert = std::function<Napi::Value(Napi::Env, Result&)>;
using Settle = std::function<void(Result)>;

Result make_result(Status st, CommFailure f = {}) {
  Result r;
  r.st = std::move(st);
  r.failure = f;
  return r;
}

struct GroupState {
  std::shared_ptr<Group> group;
  std::mutex mu;
  Status last;  // the first failure of a stream-ordered op, for group.lastError()
  CommFailure last_failure;
};

struct EnvState;
void keep_env_state(Napi::Env, EnvState*) {}
struct EnvState {
  std::mutex mu;
  std::vector<std::weak_ptr<GroupState>> groups;
  std::vector<std::weak_ptr<x::comm::TcpStoreServer>> servers;
};
void cleanup_env(void* arg) {
  auto* st = static_cast<EnvState*>(arg);
  for (auto& w : st->groups)
    if (auto g = w.lock()) g->group->close();
  for (auto& w : st->servers)
    if (auto s = w.lock()) s->stop();
  delete st;
}

// A rejection: X_INVALID_ARGUMENT for contract violations, X_TIMEOUT for store waits, otherwise
// X_COMM_ERROR with rank / op / peer / timeoutMs.
Napi::Error to_error(Napi::Env env, const Result& r, int rank) {
  if (r.st.code == Code::kInvalidArgument) return x::napi::make_error(env, r.st);
  Napi::Error e = Napi::Error::New(env, r.st.message);
  bool store_timeout = r.st.code == Code::kTimeout && r.st.operation.rfind("store", 0) == 0;
  e.Set("code", Napi::String::New(env, store_timeout ? "X_TIMEOUT" : "X_COMM_ERROR"));
  e.Set("operation", Napi::String::New(env, r.st.operation));
  e.Set("rank", Napi::Number::New(env, rank));
  if (r.failure.peer >= 0) e.Set("peer", Napi::Number::New(env, r.failure.peer));
  if (r.failure.timeout_ms >= 0) e.Set("timeoutMs", Napi::Number::New(env, static_cast<double>(r.failure.timeout_ms)));
  return e;
}

// A promise settled from any thread. keep_alive: the pending promise holds the event loop open.
Napi::Promise make_pending(Napi::Env env, Convert convert, int rank, Settle* settle_out) {
  auto deferred = std::make_shared<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
  Napi::Promise promise = deferred->Promise();
  auto tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                            "x.comm.settle", 0, 1);
  *settle_out = [deferred, tsfn, convert, rank](Result res) mutable {
    auto* r = new Result(std::move(res));
    auto local = tsfn;
    napi_status s = local.BlockingCall(r, [deferred, convert, rank](Napi::Env env, Napi::Function, Result* p) {
      std::unique_ptr<Result> owned(p);
      if (env == nullptr) return;
      try {
        if (p->st.ok()) deferred->Resolve(convert ? convert(env, *p) : env.Undefined());
        else deferred->Reject(to_error(env, *p, rank).Value());
      } catch (const Napi::Error&) {
      }
    });
    if (s != napi_ok) delete r;
    local.Release();
  };
  return promise;
}

Napi::Promise run_async(Napi::Env env, std::function<void(Result&)> work, Convert convert, int rank = -1) {
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

// ---------------------------------- stores ----------------------------------

struct StoreHandle {
  std::shared_ptr<KvStore> store;
};
struct ServerHandle {
  std::shared_ptr<x::comm::TcpStoreServer> server;
};

std::shared_ptr<KvStore> store_of(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a native store handle");
  return v.As<Napi::External<StoreHandle>>().Data()->store;
}

Napi::Value StartStoreServer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::unique_ptr<x::comm::TcpStoreServer> s;
  Status st = x::comm::TcpStoreServer::start(info[0].As<Napi::String>().Utf8Value(),
                                             info[1].As<Napi::Number>().Int32Value(), &s);
  if (!st.ok()) throw to_error(env, make_result(st), -1);
  std::shared_ptr<x::comm::TcpStoreServer> server(std::move(s));
  EnvState* es = env.GetInstanceData<EnvState>();
  {
    std::lock_guard<std::mutex> lock(es->mu);
    es->servers.push_back(server);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("port", Napi::Number::New(env, server->port()));
  out.Set("handle", Napi::External<ServerHandle>::New(env, new ServerHandle{server}, [](Napi::Env, ServerHandle* h) {
            h->server->stop();
            delete h;
          }));
  return out;
}

Napi::Value StopStoreServer(const Napi::CallbackInfo& info) {
  info[0].As<Napi::External<ServerHandle>>().Data()->server->stop();
  return info.Env().Undefined();
}

Napi::Value ConnectTcpStore(const Napi::CallbackInfo& info) {
  std::string host = info[0].As<Napi::String>().Utf8Value();
  int port = info[1].As<Napi::Number>().Int32Value();
  int64_t timeout = info[2].As<Napi::Number>().Int64Value();
  auto holder = std::make_shared<std::shared_ptr<x::comm::TcpStoreClient>>();
  return run_async(
      info.Env(),
      [host, port, timeout, holder](Result& r) { r.st = x::comm::TcpStoreClient::connect(host, port, timeout, holder.get()); },
      [holder](Napi::Env env, Result&) -> Napi::Value {
        return Napi::External<StoreHandle>::New(env, new StoreHandle{*holder},
                                                [](Napi::Env, StoreHandle* h) { delete h; });
      });
}

Napi::Value OpenFileStore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<x::comm::FileStore> fs;
  Status st = x::comm::FileStore::open(info[0].As<Napi::String>().Utf8Value(), &fs);
  if (!st.ok()) throw to_error(env, make_result(st), -1);
  return Napi::External<StoreHandle>::New(env, new StoreHandle{fs}, [](Napi::Env, StoreHandle* h) { delete h; });
}

Napi::Value BufferValue(Napi::Env env, const std::string& s) {
  return Napi::Buffer<char>::Copy(env, s.data(), s.size());
}

std::string bytes_of(const Napi::Value& v) {
  if (v.IsBuffer()) {
    auto b = v.As<Napi::Buffer<char>>();
    return std::string(b.Data(), b.Length());
  }
  if (v.IsString()) return v.As<Napi::String>().Utf8Value();
  if (v.IsUndefined() || v.IsNull()) return std::string();
  throw Napi::TypeError::New(v.Env(), "expected a Buffer or string value");
}

// storeOp(store, op, key | keys, a, b, timeoutMs) -> Promise
Napi::Value StoreOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto store = store_of(info[0]);
  std::string op = info[1].As<Napi::String>().Utf8Value();
  int64_t t = info[5].As<Napi::Number>().Int64Value();
  if (op == "wait") {
    Napi::Array a = info[2].As<Napi::Array>();
    std::vector<std::string> keys;
    for (uint32_t i = 0; i < a.Length(); i++) keys.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    return run_async(
        env, [store, keys, t](Result& r) { r.st = store->wait(keys, t, &r.list); },
        [](Napi::Env env, Result&) -> Napi::Value { return env.Undefined(); });
  }
  std::string key = info[2].As<Napi::String>().Utf8Value();
  if (op == "set") {
    std::string v = bytes_of(info[3]);
    return run_async(env, [store, key, v, t](Result& r) { r.st = store->set(key, v, t); }, nullptr);
  }
  if (op == "get") {
    return run_async(
        env, [store, key, t](Result& r) { r.st = store->get(key, t, &r.str); },
        [](Napi::Env env, Result& r) { return BufferValue(env, r.str); });
  }
  if (op == "add") {
    int64_t d = info[3].As<Napi::Number>().Int64Value();
    return run_async(
        env, [store, key, d, t](Result& r) { r.st = store->add(key, d, t, &r.num); },
        [](Napi::Env env, Result& r) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(r.num)); });
  }
  if (op == "cas") {
    std::string e = bytes_of(info[3]), d = bytes_of(info[4]);
    return run_async(
        env, [store, key, e, d, t](Result& r) { r.st = store->compare_set(key, e, d, t, &r.str); },
        [](Napi::Env env, Result& r) { return BufferValue(env, r.str); });
  }
  if (op == "delete") {
    return run_async(
        env, [store, key, t](Result& r) { r.st = store->remove(key, t, &r.flag); },
        [](Napi::Env env, Result& r) -> Napi::Value { return Napi::Boolean::New(env, r.flag); });
  }
  throw Napi::TypeError::New(env, "unknown store op " + op);
}

// ---------------------------------- groups ----------------------------------

std::shared_ptr<GroupState> group_of(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a native group handle");
  return *v.As<Napi::External<std::shared_ptr<GroupState>>>().Data();
}

Napi::Value CreateGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gs = std::make_shared<GroupState>();
  gs->group = std::make_shared<Group>(store_of(info[0]), info[1].As<Napi::String>().Utf8Value(),
                                     info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::Number>().Int32Value(),
                                     info[4].As<Napi::Number>().Int64Value(), info[5].As<Napi::String>().Utf8Value());
  EnvState* es = env.GetInstanceData<EnvState>();
  {
    std::lock_guard<std::mutex> lock(es->mu);
    es->groups.push_back(gs);
  }
  return Napi::External<std::shared_ptr<GroupState>>::New(env, new std::shared_ptr<GroupState>(gs),
                                                           [](Napi::Env, std::shared_ptr<GroupState>* h) {
                                                             (*h)->group->close();
                                                             delete h;
                                                           });
}

Napi::Value ConnectGroup(const Napi::CallbackInfo& info) {
  auto gs = group_of(info[0]);
  return run_async(
      info.Env(), [gs](Result& r) { r.st = gs->group->connect(&r.failure); }, nullptr, gs->group->rank());
}

Napi::Value CloseGroup(const Napi::CallbackInfo& info) {
  group_of(info[0])->group->close();
  return info.Env().Undefined();
}

void* ptr_of(const Napi::Value& v, const char* name) {
  if (v.IsTypedArray()) {
    auto a = v.As<Napi::TypedArray>();
    return static_cast<char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  }
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  return reinterpret_cast<void*>(u64(v, name));
}

x::comm::OpDesc op_of(const Napi::Object& o) {
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

// A stream-ordered operation: runs on the stream's thread; settles a promise when one was asked for.
struct Job {
  std::shared_ptr<GroupState> gs;
  x::comm::OpDesc op;
  Settle settle;
  bool ran = false;
  Result result;
};

int job_run(void* user) {
  auto* j = static_cast<Job*>(user);
  j->result.st = j->gs->group->run(j->op, &j->result.failure);
  j->ran = true;
  if (j->result.st.ok()) return 0;
  std::lock_guard<std::mutex> lock(j->gs->mu);
  if (j->gs->last.ok()) {
    j->gs->last = j->result.st;
    j->gs->last_failure = j->result.failure;
  }
  return 1;
}

void job_cleanup(void* user) {
  auto* j = static_cast<Job*>(user);
  if (j->settle) {
    if (!j->ran) {
      j->result.st = Status::Error(Code::kInternal, std::string(x::comm::op_name(j->op.kind)) +
                                                        " was dropped: its stream shut down before it ran");
      j->result.st.operation = x::comm::op_name(j->op.kind);
    }
    j->settle(std::move(j->result));
  }
  delete j;
}

// enqueue(group, capi, stream, op, wantPromise) -> Promise | undefined
Napi::Value Enqueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gs = group_of(info[0]);
  auto* core = reinterpret_cast<const x_core_api*>(u64(info[1], "capi"));
  auto* stream = reinterpret_cast<x_stream*>(u64(info[2], "stream"));
  if (core == nullptr || core->version != X_CORE_API_VERSION || core->size < sizeof(x_core_api))
    check(env, Status::Error(Code::kInternal, "@x/core's C table has an unexpected version"));
  auto* job = new Job{gs, op_of(info[3].As<Napi::Object>()), nullptr, false, {}};
  Napi::Value ret = env.Undefined();
  if (info[4].ToBoolean()) ret = make_pending(env, nullptr, gs->group->rank(), &job->settle);
  std::string label = std::string("comm.") + x::comm::op_name(job->op.kind);
  int rc = core->stream_enqueue_host(stream, job_run, job_cleanup, job, label.c_str());
  if (rc != 0) {
    // Not enqueued: the cleanup never runs, so settle and free here.
    Status st = Status::Error(static_cast<Code>(rc), core->last_error());
    if (job->settle) job->settle(make_result(st));
    delete job;
    check(env, st);
  }
  return ret;
}

Napi::Value LastError(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gs = group_of(info[0]);
  std::lock_guard<std::mutex> lock(gs->mu);
  if (gs->last.ok()) return env.Null();
  return to_error(env, make_result(gs->last, gs->last_failure), gs->group->rank()).Value();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* st = new EnvState();
  env.SetInstanceData<EnvState, keep_env_state>(st);
  napi_add_env_cleanup_hook(env, cleanup_env, st);
  exports.Set("startStoreServer", Napi::Function::New(env, StartStoreServer));
  exports.Set("stopStoreServer", Napi::Function::New(env, StopStoreServer));
  exports.Set("connectTcpStore", Napi::Function::New(env, ConnectTcpStore));
  exports.Set("openFileStore", Napi::Function::New(env, OpenFileStore));
  exports.Set("storeOp", Napi::Function::New(env, StoreOp));
  exports.Set("createGroup", Napi::Function::New(env, CreateGroup));
  exports.Set("connectGroup", Napi::Function::New(env, ConnectGroup));
  exports.Set("closeGroup", Napi::Function::New(env, CloseGroup));
  exports.Set("enqueue", Napi::Function::New(env, Enqueue));
  exports.Set("lastError", Napi::Function::New(env, LastError));
  return exports;
}

}  // namespace

NODE_API_MODULE(x_comm, Init)
