// Operations of @x/comm as plain values, shared by the gloo and NCCL groups. Codes match
// packages/comm/src/native.ts (OP).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "reduce.h"

namespace x::comm {

enum class OpKind : int {
  kAllReduce = 0,
  kBroadcast = 1,
  kAllGather = 2,
  kReduceScatter = 3,
  kSend = 4,
  kRecv = 5,
  kBarrier = 6,
  kExchange = 7,
};
const char* op_name(OpKind k);

// One send or receive of an exchange (grouped point-to-point, e.g. between pipeline stages).
struct P2P {
  bool send = true;
  void* ptr = nullptr;
  size_t count = 0;
  DType dtype = DType::kF32;
  int peer = 0;
  uint32_t tag = 0;
};

// A collective or point-to-point operation as plain values (converted from JS before any thread
// runs it). Buffers are owned by the caller until the operation completes: host memory for gloo,
// device memory of the group's GPU for NCCL.
struct OpDesc {
  OpKind kind = OpKind::kBarrier;
  void* in = nullptr;   // input (allGather, reduceScatter); the buffer of in-place ops
  void* out = nullptr;  // output (allGather: size*count elements; reduceScatter: count)
  size_t count = 0;     // elements per rank
  DType dtype = DType::kF32;
  ReduceOp reduce = ReduceOp::kSum;
  int root = 0;  // broadcast root, or the peer of send / recv
  uint32_t tag = 0;
  int64_t timeout_ms = 0;  // 0: the group's timeout
  std::vector<P2P> items;  // exchange
};

// What a CommError needs besides the message: the peer involved (-1 when unknown) and the
// timeout that ran out (-1 when the failure was not a timeout).
struct CommFailure {
  int peer = -1;
  int64_t timeout_ms = -1;
};

}  // namespace x::comm
