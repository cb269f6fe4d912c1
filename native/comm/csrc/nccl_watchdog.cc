// The watchdog of an NCCL group (see nccl_group.h): completion, timeouts, async errors, abort.
#include <algorithm>

#include "nccl_exit.h"
#include "nccl_group.h"

namespace x::comm {
namespace {

using Clock = std::chrono::steady_clock;

// CUDA_ERROR_DEINITIALIZED: the driver is shutting down (the process is exiting). Not a failure of
// the operation: the watchdog stops touching CUDA and NCCL and returns.
constexpr cuda::CUresult kCudaDeinitialized = 4;

}  // namespace

void NcclGroup::watchdog() {
  std::unique_lock<std::mutex> lock(state_mu_);
  watchdog_loop(lock);
  watchdog_running_ = false;
  lock.unlock();
  quiet_cv_.notify_all();
}

void NcclGroup::watchdog_loop(std::unique_lock<std::mutex>& lock) {
  lock.unlock();
  Status entered = enter();
  lock.lock();
  auto nap = std::chrono::microseconds(50);
  for (;;) {
    // Idle until there is work; the bound only re-checks the state (nothing is lost by a wake-up).
    auto work = [&] { return stop_ || abort_requested_ || !pending_.empty(); };
    while (!cv_.wait_for(lock, std::chrono::seconds(1), work)) {
    }
    if (exiting_ || process_exiting() || entered.cuda_result == kCudaDeinitialized) return;
    std::vector<Waiter> settle, done;
    if (abort_requested_) {
      abort_requested_ = false;
      lock.unlock();
      // Waiters were told of the failure already: the abort can take until the work queued on
      // the streams before the failed operation has drained.
      nccl::ncclComm_t comm = nullptr;
      {
        std::lock_guard<std::mutex> op_lock(op_mu_);
        std::swap(comm, comm_);
      }
      if (comm != nullptr) nccl_->ncclCommAbort(comm);
      lock.lock();
      continue;
    }
    if (stop_) return;
    bool progressed = false;
    auto now = Clock::now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      cuda::CUresult q = entered.ok() ? cu_->cuEventQuery(it->event) : cuda::CUDA_ERROR_NOT_READY;
      if (q == kCudaDeinitialized) return;  // the driver is going away with the process
      if (q == cuda::CUDA_SUCCESS) {
        free_events_.push_back(it->event);
        it = pending_.erase(it);
        progressed = true;
        continue;
      }
      const char* name = op_name(it->kind);
      if (q != cuda::CUDA_ERROR_NOT_READY || !entered.ok()) {
        Status cause = entered.ok() ? cuda_status(q, "cuEventQuery") : entered;
        fail_locked(error(name, std::string(name) + " failed on cuda:" + std::to_string(device_) + ": " + cause.message,
                          nullptr),
                    {}, &settle);
        break;
      }
      if (now > it->deadline) {
        CommFailure f;
        f.timeout_ms = timeout_ms_;
        f.peer = it->peer;
        std::string with = it->peer >= 0 ? " with peer " + std::to_string(it->peer) : "";
        fail_locked(error(name,
                          std::string(name) + with + " did not complete within " + std::to_string(timeout_ms_) +
                              " ms on cuda:" + std::to_string(device_) +
                              " (a rank did not join it, or the GPU is stuck); the watchdog aborted the NCCL "
                              "communicator: create a new group",
                          nullptr, timeout_ms_),
                    f, &settle);
        break;
      }
      ++it;
    }
    if (failed_.ok() && !pending_.empty()) {
      nccl::ncclResult_t async = nccl::ncclSuccess;
      // comm_ changes only on this thread (abort) or after this thread was joined (close).
      if (comm_ != nullptr && nccl_->ncclCommGetAsyncError(comm_, &async) == nccl::ncclSuccess &&
          async != nccl::ncclSuccess && async != nccl::ncclInProgress) {
        const char* name = op_name(pending_.front().kind);
        fail_locked(error(name, std::string(name) + ": " + nccl::describe(async, "an NCCL operation", comm_) +
                                    "; the watchdog aborted the NCCL communicator: create a new group",
                          nullptr),
                    {}, &settle);
      }
    }
    settle_done_locked(&done);
    if (!settle.empty() || !done.empty()) {
      Status st = failed_;
      CommFailure f = failed_detail_;
      lock.unlock();
      for (auto& w : settle) w.done(st, f);
      for (auto& w : done) w.done(Status::Ok(), {});
      lock.lock();
    }
    if (abort_requested_ || stop_) continue;
    nap = progressed ? std::chrono::microseconds(50) : std::min(nap * 2, std::chrono::microseconds(1000));
    cv_.wait_for(lock, nap, [&] { return stop_ || abort_requested_; });
  }
}

}  // namespace x::comm
