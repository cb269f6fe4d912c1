// A process group over NCCL (libnccl opened at run time) on one CUDA device.
//
// Threads:
// - connect() runs on a native thread: store rendezvous (every rank checks in, so a missing rank is
//   named), rank 0 publishes the unique id, ncclCommInitRankConfig (blocking communicator), and a
//   one-byte warm-up all-reduce on a private stream.
// - enqueue() runs on the caller's thread (the JS thread) and only *enqueues*: the NCCL kernel goes
//   on the CUstream the caller named, then a completion event is recorded there. It does not wait
//   for the GPU. The one exception is the first send/recv between two ranks in a direction: a
//   bounded store handshake first makes sure the peer reached its matching call, because NCCL
//   connects the pair inside that call and would otherwise wait for the peer without a bound.
// - The watchdog thread polls the completion events and ncclCommGetAsyncError. When an operation
//   outlives its timeout (counted from its enqueue) or NCCL reports an asynchronous error, it
//   records the failure (op, rank, timeout), settles waiters, and aborts the communicator with
//   ncclCommAbort. It is the only thread that aborts, so an abort never races an NCCL call.
// - Process exit with the group still live (nccl_exit.cc): exit() runs neither Node's cleanup
//   hooks nor dispose(), and tears the CUDA runtime and driver down under threads that are still
//   running. A handler registered after NCCL's first init runs before that: begin_exit() stops the
//   watchdog (settling no one), wait_quiet() waits (bounded) for it and for a connect in progress,
//   take_comm() hands the communicator over to be aborted. After begin_exit() the group makes no
//   CUDA or NCCL call of its own any more.
// Locks: op_mu_ serializes NCCL calls on the communicator; state_mu_ guards pending operations,
// waiters and the failure. op_mu_ is never taken while state_mu_ is held.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "comm_op.h"
#include "kv_store.h"
#include "nccl_api.h"
#include "x/cuda_driver.h"

namespace x::comm {

class NcclGroup : public std::enable_shared_from_this<NcclGroup> {
 public:
  using Clock = std::chrono::steady_clock;
  using Done = std::function<void(Status, CommFailure)>;

  NcclGroup(std::shared_ptr<KvStore> store, std::string prefix, int rank, int size, int device,
            int64_t timeout_ms);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  // Forms the communicator. Blocks up to about the timeout; call off the JS thread.
  Status connect(CommFailure* failure);
  // Enqueues `op` on `stream` (a CUstream of this group's device) and returns.
  Status enqueue(const OpDesc& op, cuda::CUstream stream, CommFailure* failure);
  // Calls `done` (on the watchdog thread, or at once) when every operation enqueued so far has
  // completed, or with the failure that ended the group.
  void wait(Done done);
  // The failure that ended the group (ok when none).
  Status failure(CommFailure* out);
  // Stops the watchdog and destroys the communicator (aborts it when work is still pending).
  // Idempotent; blocks until an abort in progress finished.
  void close();

  // Process exit only (nccl_exit.cc). Whether the group holds anything NCCL may still be using:
  // a communicator, a watchdog or a connect in progress, and it was not closed.
  bool live();
  // Stops the watchdog at its next poll (an abort it is inside of still returns first); drops the
  // waiters unsettled (no JS runs any more). From then on the group calls no CUDA or NCCL.
  void begin_exit();
  // Waits until the watchdog has returned (then joins it) and no connect is in progress.
  bool wait_quiet(Clock::time_point deadline);
  // The communicator (null when there is none), which the caller now owns.
  nccl::ncclComm_t take_comm();
  const nccl::Api* api() const { return nccl_; }

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }

 private:
  struct Pending {
    uint64_t seq;
    OpKind kind;
    int peer;  // send / recv; -1 for collectives
    cuda::CUevent event;
    std::chrono::steady_clock::time_point deadline;
  };
  struct Waiter {
    uint64_t seq;
    Done done;
  };

  Status enter();  // makes the device's primary context current on the calling thread
  Status connect_impl(CommFailure* failure);
  Status rendezvous(nccl::ncclUniqueId* id, CommFailure* failure);
  Status warm_up(CommFailure* failure);
  Status handshake(const std::vector<P2P>& items, const char* name, CommFailure* failure);
  nccl::ncclResult_t launch(const OpDesc& op, cuda::CUstream stream, const char** call);
  Status error(const std::string& op, const std::string& message, CommFailure* failure,
               int64_t timeout_ms = -1) const;
  void watchdog();
  void watchdog_loop(std::unique_lock<std::mutex>& lock);
  void teardown();
  // Records the first failure and asks the watchdog to abort; settles the waiters.
  void fail(Status st, CommFailure f);
  // The same with state_mu_ held: the waiters to settle are moved into `settle`.
  void fail_locked(Status st, CommFailure f, std::vector<Waiter>* settle);
  void settle_done_locked(std::vector<Waiter>* settle);

  const nccl::Api* nccl_ = nullptr;
  const cuda::Driver* cu_ = nullptr;
  std::shared_ptr<KvStore> store_;
  std::string prefix_;
  int rank_;
  int size_;
  int device_;
  int64_t timeout_ms_;
  cuda::CUcontext ctx_ = nullptr;
  cuda::CUdeviceptr scratch_ = 0;  // 256 bytes for barrier; owned by the group, never moves

  std::mutex op_mu_;
  nccl::ncclComm_t comm_ = nullptr;                  // null once destroyed or aborted
  std::set<std::pair<int, int>> connected_;          // (sender, receiver) pairs handshaken

  std::mutex state_mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  std::vector<cuda::CUevent> free_events_;
  std::vector<Waiter> waiters_;
  uint64_t next_seq_ = 1;
  Status failed_;  // the first failure; the group is unusable after it
  CommFailure failed_detail_;
  bool abort_requested_ = false;
  bool connecting_ = false;
  bool stop_ = false;
  bool exiting_ = false;           // begin_exit() was called
  bool watchdog_running_ = false;  // the watchdog thread has not returned yet
  std::condition_variable quiet_cv_;  // watchdog returned / connect finished
  std::thread watchdog_;
};

}  // namespace x::comm
