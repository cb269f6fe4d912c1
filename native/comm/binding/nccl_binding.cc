// Node-API glue for NCCL groups: JS values become an OpDesc on the JS thread, which enqueues the
// operation on the CUstream behind the caller's @x/core Stream (resolved through core's C table).
// Connecting runs on a native thread; waits settle from the group's watchdog thread.
#include "../csrc/nccl_api.h"
#include "../csrc/nccl_group.h"
#include "glue.h"
#include "x/core_api.h"

namespace x::comm::binding {
namespace {

using x::comm::NcclGroup;

std::shared_ptr<NcclGroup> nccl_group_of(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a native NCCL group handle");
  return *v.As<Napi::External<std::shared_ptr<NcclGroup>>>().Data();
}

// ncclStatus() -> { available, library, version, reason }: opens libnccl once; never throws.
Napi::Value NcclStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const x::nccl::Load& l = x::nccl::load();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", Napi::Boolean::New(env, l.api != nullptr));
  o.Set("library", Napi::String::New(env, l.library));
  o.Set("version", l.version > 0 ? Napi::String::New(env, x::nccl::version_string(l.version)) : env.Null());
  o.Set("reason", l.api != nullptr ? env.Null() : Napi::String::New(env, l.why));
  return o;
}

// createNcclGroup(store, prefix, rank, size, device, timeoutMs) -> handle
Napi::Value CreateNcclGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = std::make_shared<NcclGroup>(store_of(info[0]), info[1].As<Napi::String>().Utf8Value(),
                                       info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::Number>().Int32Value(),
                                       info[4].As<Napi::Number>().Int32Value(), info[5].As<Napi::Number>().Int64Value());
  env.GetInstanceData<EnvState>()->add([w = std::weak_ptr<NcclGroup>(g)] {
    if (auto p = w.lock()) p->close();
  });
  return Napi::External<std::shared_ptr<NcclGroup>>::New(env, new std::shared_ptr<NcclGroup>(g),
                                                          [](Napi::Env, std::shared_ptr<NcclGroup>* h) {
                                                            (*h)->close();
                                                            delete h;
                                                          });
}

Napi::Value ConnectNcclGroup(const Napi::CallbackInfo& info) {
  auto g = nccl_group_of(info[0]);
  return run_async(info.Env(), [g](Result& r) { r.st = g->connect(&r.failure); }, nullptr, g->rank());
}

Napi::Value CloseNcclGroup(const Napi::CallbackInfo& info) {
  nccl_group_of(info[0])->close();
  return info.Env().Undefined();
}

// ncclEnqueue(group, capi, stream, op): enqueues on the stream and returns; throws on failure.
Napi::Value NcclEnqueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = nccl_group_of(info[0]);
  const x_core_api* core = core_table(env, info[1]);
  auto* stream = reinterpret_cast<x_stream*>(x::napi::u64(info[2], "stream"));
  int device = X_DEVICE_CPU;
  if (core->stream_device(stream, &device) != X_SUCCESS)
    x::napi::check(env, Status::Invalid(std::string("Expected a live Stream for stream: ") + core->last_error()));
  void* cu = core->stream_cuda_handle(stream);
  if (device != g->device() || cu == nullptr) {
    std::string got = device == X_DEVICE_CPU ? "cpu" : "cuda:" + std::to_string(device);
    x::napi::check(env, Status::Invalid("Expected a CUDA stream of cuda:" + std::to_string(g->device()) +
                                        " (the group's device) for stream but received a stream of " + got +
                                        (cu == nullptr && device != X_DEVICE_CPU ? " that was disposed" : "")));
  }
  x::comm::OpDesc op = op_of(info[3].As<Napi::Object>());
  use_ranges(env, core, stream, op, g->size());
  Result r;
  r.st = g->enqueue(op, static_cast<x::cuda::CUstream>(cu), &r.failure);
  if (!r.st.ok()) throw to_error(env, r, g->rank());
  return env.Undefined();
}

// ncclWait(group) -> Promise: every operation enqueued so far completed (or the group failed).
Napi::Value NcclWait(const Napi::CallbackInfo& info) {
  auto g = nccl_group_of(info[0]);
  Settle settle;
  Napi::Promise p = make_pending(info.Env(), nullptr, g->rank(), &settle);
  g->wait([settle](Status st, CommFailure f) mutable { settle(make_result(std::move(st), f)); });
  return p;
}

Napi::Value NcclLastError(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = nccl_group_of(info[0]);
  CommFailure f;
  Status st = g->failure(&f);
  if (st.ok()) return env.Null();
  return to_error(env, make_result(st, f), g->rank()).Value();
}

}  // namespace

void register_nccl(Napi::Env env, Napi::Object exports) {
  exports.Set("ncclStatus", Napi::Function::New(env, NcclStatus));
  exports.Set("createNcclGroup", Napi::Function::New(env, CreateNcclGroup));
  exports.Set("connectNcclGroup", Napi::Function::New(env, ConnectNcclGroup));
  exports.Set("closeNcclGroup", Napi::Function::New(env, CloseNcclGroup));
  exports.Set("ncclEnqueue", Napi::Function::New(env, NcclEnqueue));
  exports.Set("ncclWait", Napi::Function::New(env, NcclWait));
  exports.Set("ncclLastError", Napi::Function::New(env, NcclLastError));
}

}  // namespace x::comm::binding
