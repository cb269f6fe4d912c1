// Node-API glue for @x/comm: JS values become plain structs on the JS thread; stores, rendezvous
// and collectives run on native threads (a CPU stream's thread, or a short-lived thread for store
// calls) and settle promises through thread-safe functions. Failures carry rank / op / peer /
// timeoutMs so the TS layer can raise CommError.
#include <napi.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "../csrc/file_store.h"
#include "../csrc/gloo_group.h"
#include "../csrc/tcp_store.h"
#include "glue.h"
#include "host_args.h"
#include "x/core_api.h"
#include "x/napi_util.h"

namespace {

using namespace x::comm::binding;  // NOLINT: the glue is this addon's own vocabulary
using x::Code;
using x::Status;
using x::comm::CommFailure;
using x::comm::Group;
using x::comm::KvStore;
using x::napi::check;
using x::napi::u64;

struct GroupState {
  std::shared_ptr<Group> group;
  std::mutex mu;
  Status last;  // the first failure of a stream-ordered op, for group.lastError()
  CommFailure last_failure;
};

void keep_env_state(Napi::Env, EnvState*) {}
void cleanup_env(void* arg) {
  auto* st = static_cast<EnvState*>(arg);
  for (auto& fn : st->cleanups) fn();
  delete st;
}

// ---------------------------------- stores ----------------------------------

Napi::Value StartStoreServer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::unique_ptr<x::comm::TcpStoreServer> s;
  Status st = x::comm::TcpStoreServer::start(info[0].As<Napi::String>().Utf8Value(),
                                             info[1].As<Napi::Number>().Int32Value(), &s);
  if (!st.ok()) throw to_error(env, make_result(st), -1);
  std::shared_ptr<x::comm::TcpStoreServer> server(std::move(s));
  env.GetInstanceData<EnvState>()->add([w = std::weak_ptr<x::comm::TcpStoreServer>(server)] {
    if (auto s = w.lock()) s->stop();
  });
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
  env.GetInstanceData<EnvState>()->add([w = std::weak_ptr<GroupState>(gs)] {
    if (auto g = w.lock()) g->group->close();
  });
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

// A stream-ordered operation: runs on the stream's thread; settles a promise when one was asked for.
struct Job {
  std::shared_ptr<GroupState> gs;
  x::comm::OpDesc op;
  Settle settle;
  bool ran = false;
  Result result;
  const x_core_api* core = nullptr;  // tensor forms: memory is re-checked when the op runs
  HostArgs host;                     // host forms: the copies the op runs on
};

// The reason a tensor-form op cannot touch one of its buffers now (ok when it can): freed, put to
// sleep, or never x's memory.
Status unusable_range(const Job& j) {
  for (const Range& r : op_ranges(j.op, j.gs->group->size())) {
    if (r.bytes == 0) continue;
    int rc = j.core->check_range(X_DEVICE_CPU, reinterpret_cast<uint64_t>(r.ptr), r.bytes);
    if (rc != X_SUCCESS) {
      const char* name = x::comm::op_name(j.op.kind);
      Status st = Status::Error(Code::kInternal, "rank " + std::to_string(j.gs->group->rank()) + ": " + name +
                                                     " not run: its " + r.what + " is no longer usable: " +
                                                     j.core->last_error());
      st.operation = name;
      return st;
    }
  }
  return Status::Ok();
}

void record_failure(Job* j) {
  std::lock_guard<std::mutex> lock(j->gs->mu);
  if (j->gs->last.ok()) {
    j->gs->last = j->result.st;
    j->gs->last_failure = j->result.failure;
  }
}

int job_run(void* user) {
  auto* j = static_cast<Job*>(user);
  // Tensor forms: core holds the declared ranges while this runs (stream_enqueue_host_ranges); an
  // older core without that entry only lets us re-check them here.
  j->result.st = j->core != nullptr ? unusable_range(*j) : Status::Ok();
  if (j->result.st.ok()) j->result.st = j->gs->group->run(j->op, &j->result.failure);
  j->ran = true;
  if (j->result.st.ok()) {
    take_outputs(&j->host, &j->result);
    return 0;
  }
  record_failure(j);
  return 1;
}

// Called once, after job_run or instead of it: the stream shut down first, or (tensor forms) core
// cancelled the op because a buffer was freed or put to sleep before it ran.
void job_cleanup(void* user) {
  auto* j = static_cast<Job*>(user);
  if (!j->ran) {
    const char* name = x::comm::op_name(j->op.kind);
    j->result.st = j->core != nullptr ? unusable_range(*j) : Status::Ok();
    if (j->result.st.ok()) {
      j->result.st =
          Status::Error(Code::kInternal, std::string(name) + " was dropped: its stream shut down before it ran");
      j->result.st.operation = name;
    }
    if (j->core != nullptr) record_failure(j);
  }
  if (j->settle) j->settle(std::move(j->result));
  delete j;
}

bool has_enqueue_ranges(const x_core_api* core) {
  return core->size >=
         offsetof(x_core_api, stream_enqueue_host_ranges) + sizeof(x_core_api::stream_enqueue_host_ranges);
}

// enqueue(group, capi, stream, op, wantPromise) -> Promise | undefined
Napi::Value Enqueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gs = group_of(info[0]);
  const x_core_api* core = core_table(env, info[1]);
  auto* stream = reinterpret_cast<x_stream*>(u64(info[2], "stream"));
  const bool host_form = info[4].ToBoolean();
  Napi::Object desc = info[3].As<Napi::Object>();
  auto job = std::make_unique<Job>();
  job->gs = gs;
  job->op = op_of(desc);
  std::vector<x_range> ranges;
  if (host_form) {
    stage_host_args(env, desc, &job->op, &job->host);
  } else {
    // Tensor forms: the memory must be x's (HostBuffer, @x/cumem) and awake, now and while it runs.
    job->core = core;
    for (const Range& r : op_ranges(job->op, gs->group->size())) {
      if (r.bytes > 0) ranges.push_back(x_range{reinterpret_cast<uint64_t>(r.ptr), r.bytes, r.what});
    }
    if (!has_enqueue_ranges(core)) use_ranges(env, core, stream, job->op, gs->group->size());
  }
  Napi::Value ret = env.Undefined();
  if (host_form) {
    ret = make_pending(env, nullptr, gs->group->rank(), &job->settle, copy_back(job->host.arrays));
  }
  std::string label = std::string("comm.") + x::comm::op_name(job->op.kind);
  Job* raw = job.get();
  int rc = has_enqueue_ranges(core) ? core->stream_enqueue_host_ranges(stream, job_run, job_cleanup, raw, label.c_str(),
                                                                       ranges.data(), ranges.size())
                                    : core->stream_enqueue_host(stream, job_run, job_cleanup, raw, label.c_str());
  if (rc != 0) {
    // Not enqueued: the cleanup never runs, so settle (which releases the promise's thread-safe
    // function) and free here; the call throws.
    Status st = Status::Error(static_cast<Code>(rc), core->last_error());
    if (job->settle) job->settle(make_result(st));
    check(env, st);
  }
  job.release();  // owned by the stream now: job_cleanup deletes it
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
  register_nccl(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(x_comm, Init)
