// A process group over gloo's TCP transport. Rendezvous goes through a KvStore under a per-group
// key prefix. Operations are blocking and run on whichever thread calls run(): the CPU stream
// thread of the stream the caller named (tensor forms) or the group's private stream (host arrays).
// A mutex keeps one operation of a group on the wire at a time; ranks must issue a group's
// operations in the same order, and a cheap metadata exchange before each collective turns a
// mismatch (different op, dtype or size) into an error on every rank instead of a hang or garbage.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kv_store.h"
#include "reduce.h"

namespace gloo {
class Context;
}

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
// runs it). Buffers are host memory owned by the caller until the operation completes.
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

class Group {
 public:
  // `host`: the address this rank's gloo transport listens on (reachable by every peer).
  Group(std::shared_ptr<KvStore> store, std::string prefix, int rank, int size, int64_t timeout_ms,
        std::string host);
  ~Group();

  // Rendezvous and connect the full mesh. Blocks up to the timeout; call off the JS thread.
  Status connect(CommFailure* failure);
  // Runs one operation to completion (or failure within its timeout).
  Status run(const OpDesc& op, CommFailure* failure);
  // Tears the connections down; later operations fail. Idempotent.
  void close();

  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  Status run_locked(const OpDesc& op, int64_t timeout_ms, CommFailure* failure);
  Status check_metadata(const OpDesc& op, int64_t timeout_ms, CommFailure* failure);
  Status p2p(const std::vector<P2P>& items, int64_t timeout_ms, const char* name, CommFailure* failure);
  Status fail(const std::string& op, const std::string& message, CommFailure* failure, bool timed_out,
              int64_t timeout_ms);

  std::shared_ptr<KvStore> store_;
  std::string prefix_;
  int rank_;
  int size_;
  int64_t timeout_ms_;
  std::string host_;
  std::mutex mu_;
  std::shared_ptr<gloo::Context> context_;
  std::string broken_;  // set by the first failure: gloo's pairs are not reusable after one
  uint32_t seq_ = 0;
};

}  // namespace x::comm
