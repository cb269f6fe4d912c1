// Host forms (`await g.allReduce(float32Array)`) run on copies of their arrays, owned by the job:
// the arrays are copied when the operation is enqueued (JS thread), and what the operation wrote
// is copied back into them on the JS thread before its promise settles. Native threads never touch
// JS memory, so a worker thread torn down while the operation is still on the wire frees its arrays
// and nothing writes into them afterwards (the operation finishes on the copies).
#pragma once

#include <napi.h>

#include <cstring>
#include <memory>
#include <vector>

#include "../csrc/comm_op.h"
#include "glue.h"

namespace x::comm::binding {

struct HostArgs {
  std::vector<std::vector<char>> copies;  // what the operation reads and writes
  std::vector<size_t> written;            // indices of the copies it writes, in order
  // JS thread only: references to the arrays of `written`, same order. Raw napi_refs (trivially
  // destructible): whatever thread drops the last owner, no napi call happens there; deleted on the
  // JS thread by copy_back, leaked if the environment goes away first.
  std::shared_ptr<std::vector<napi_ref>> arrays = std::make_shared<std::vector<napi_ref>>();
};

// Whether `kind` writes the buffer in `field` ("in", "out", or an exchange item that receives).
inline bool host_writes(OpKind kind, const char* field, bool receiving_item) {
  switch (kind) {
    case OpKind::kAllReduce:
    case OpKind::kBroadcast:
    case OpKind::kRecv: return std::strcmp(field, "in") == 0;
    case OpKind::kAllGather:
    case OpKind::kReduceScatter: return std::strcmp(field, "out") == 0;
    case OpKind::kExchange: return receiving_item;
    default: return false;
  }
}

// Points `op`'s buffers at copies of the JS arrays named in `desc` (packages/comm/src/native.ts
// NativeOp); non-array fields are left as they are.
inline void stage_host_args(Napi::Env env, const Napi::Object& desc, OpDesc* op, HostArgs* out) {
  auto stage = [&](const Napi::Value& v, void** slot, bool writes) {
    if (!v.IsTypedArray()) return;
    auto a = v.As<Napi::TypedArray>();
    const char* data = static_cast<const char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
    out->copies.emplace_back(data, data + a.ByteLength());
    *slot = out->copies.back().data();
    if (!writes) return;
    napi_ref ref = nullptr;
    if (napi_create_reference(env, a, 1, &ref) != napi_ok) {
      throw Napi::Error::New(env, "cannot keep a reference to a host array");
    }
    out->written.push_back(out->copies.size() - 1);
    out->arrays->push_back(ref);
  };
  // Moving a std::vector<char> keeps its heap buffer, so earlier `*slot`s stay valid as copies grows.
  out->copies.reserve(2 + op->items.size());
  stage(desc.Get("in"), &op->in, host_writes(op->kind, "in", false));
  stage(desc.Get("out"), &op->out, host_writes(op->kind, "out", false));
  Napi::Value items = desc.Get("items");
  if (items.IsArray()) {
    Napi::Array a = items.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length() && i < op->items.size(); i++) {
      P2P& it = op->items[i];
      stage(a.Get(i).As<Napi::Object>().Get("ptr"), &it.ptr, host_writes(op->kind, "items", !it.send));
    }
  }
}

// After a successful run (operation thread): moves the written copies into the result.
inline void take_outputs(HostArgs* args, Result* r) {
  for (size_t i : args->written) r->outputs.push_back(std::move(args->copies[i]));
}

// JS thread, whatever the outcome: copies the outputs into their arrays (when the operation
// succeeded and an array still has its size: a detached one has none) and drops the references.
inline JsDone copy_back(std::shared_ptr<std::vector<napi_ref>> arrays) {
  return [arrays](Napi::Env env, Result& r) {
    for (size_t i = 0; i < arrays->size(); i++) {
      napi_ref ref = (*arrays)[i];
      napi_value v = nullptr;
      if (r.st.ok() && i < r.outputs.size() && napi_get_reference_value(env, ref, &v) == napi_ok && v != nullptr) {
        Napi::Value value(env, v);
        if (value.IsTypedArray()) {
          auto a = value.As<Napi::TypedArray>();
          if (a.ByteLength() == r.outputs[i].size() && !r.outputs[i].empty()) {
            std::memcpy(static_cast<char*>(a.ArrayBuffer().Data()) + a.ByteOffset(), r.outputs[i].data(),
                        r.outputs[i].size());
          }
        }
      }
      napi_delete_reference(env, ref);
    }
    arrays->clear();
  };
}

}  // namespace x::comm::binding
