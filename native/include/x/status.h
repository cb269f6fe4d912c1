// Status: how native code in x reports failure. Nothing native throws across a C boundary or exits
// the process; every fallible function returns a Status, and the Node-API glue turns a failed one
// into a JS error whose `code` the TypeScript layer maps onto a typed XError subclass.
#pragma once

#include <string>
#include <utility>

#include "x/cuda_driver.h"

namespace x {

// Stable codes, shared with packages/core/src/errors.ts (XErrorCode).
enum class Code {
  kOk = 0,
  kInvalidArgument,  // a caller passed something out of contract
  kCuda,             // a CUDA driver call failed
  kNoDevice,         // the device asked for does not exist or CUDA is unavailable
  kOutOfMemory,      // host or device allocation failed
  kAsleep,           // memory touched while its range is unmapped by sleep
  kTimeout,          // a bounded wait ran out
  kInternal,         // an invariant broke; a bug in x
  kStream,           // work on a CPU stream failed (reported at the next synchronization)
};

inline const char* code_name(Code c) {
  switch (c) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "X_INVALID_ARGUMENT";
    case Code::kCuda: return "X_CUDA_ERROR";
    case Code::kNoDevice: return "X_NO_DEVICE";
    case Code::kOutOfMemory: return "X_OUT_OF_MEMORY";
    case Code::kAsleep: return "X_ASLEEP";
    case Code::kTimeout: return "X_TIMEOUT";
    case Code::kInternal: return "X_INTERNAL";
    case Code::kStream: return "X_STREAM_ERROR";
  }
  return "X_INTERNAL";
}

struct Status {
  Code code = Code::kOk;
  std::string message;
  int cuda_result = 0;    // the CUresult when code == kCuda (or kOutOfMemory from CUDA)
  std::string operation;  // the driver call or operation that failed

  bool ok() const { return code == Code::kOk; }
  static Status Ok() { return {}; }
  static Status Error(Code c, std::string msg) { return Status{c, std::move(msg), 0, {}}; }
  static Status Invalid(std::string msg) { return Error(Code::kInvalidArgument, std::move(msg)); }
};

// Wraps a CUresult into a Status naming the failing call.
inline Status cuda_status(cuda::CUresult r, const char* op) {
  if (r == cuda::CUDA_SUCCESS) return Status::Ok();
  Status s;
  s.code = r == cuda::CUDA_ERROR_OUT_OF_MEMORY ? Code::kOutOfMemory : Code::kCuda;
  s.cuda_result = r;
  s.operation = op;
  s.message = std::string(op) + " failed: " + cuda::error_name(r) + " (" + cuda::error_string(r) + ")";
  return s;
}

#define X_RETURN_IF_ERROR(expr)      \
  do {                               \
    ::x::Status _st = (expr);        \
    if (!_st.ok()) return _st;       \
  } while (0)

#define X_CUDA_CHECK(call) X_RETURN_IF_ERROR(::x::cuda_status((call), #call))

}  // namespace x
