// A process group over gloo's TCP transport. Rendezvous goes through a KvStore under a per-group
// key prefix. Operations are blocking and run on whichever thread calls run(): the CPU stream
// thread of the stream the caller named (tensor forms) or the group's private stream (host arrays).
// One connect or operation of a group is on the wire at a time (op_mu_); ranks must issue a group's
// operations in the same order, and a cheap metadata exchange before each collective turns a
// mismatch (different op, dtype or size) into an error on every rank instead of a hang or garbage.
//
// close() never waits for the network: it runs on the JS thread (dispose) and in environment
// teardown (a worker thread terminated while an operation waits for a peer), so it only takes
// state_mu_, marks the group closed, drops its reference to the gloo context and aborts the
// connections of an operation in flight (which then fails at once on its thread). A connect in
// flight finishes (bounded by the timeout) on its thread and discards what it built.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "comm_op.h"
#include "kv_store.h"

namespace gloo {
class Context;
}

namespace x::comm {

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
  // Later operations fail; an operation in flight fails at once (its connections are aborted).
  // Never waits for the network. Idempotent.
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

  std::mutex op_mu_;  // held while a connect or an operation runs
  uint32_t seq_ = 0;  // op_mu_

  std::mutex state_mu_;  // never held while waiting on the network
  std::shared_ptr<gloo::Context> context_;
  // The context of the running operation (set and cleared under state_mu_, used by the operation's
  // thread under op_mu_): what close() aborts.
  std::shared_ptr<gloo::Context> active_;
  std::string broken_;  // set by the first failure: gloo's pairs are not reusable after one
  bool closed_ = false;
};

}  // namespace x::comm
