// The process-exit handler for NCCL groups.
//
// When Node's main thread ends the process abruptly (an uncaught exception, process.exit()), it
// calls exit(): that runs the functions registered with atexit/on_exit (the last registered first),
// then C++ static destructors and the libraries' destructors, but not Node's environment cleanup
// hooks, so no group is disposed; and every other thread keeps running meanwhile. The CUDA runtime
// inside libnccl and the driver tear down there while NCCL's proxy threads of a live communicator,
// a watchdog inside ncclCommAbort (which can wait for the work queued before a timed-out operation
// to drain), or a watchdog polling events still run: the process dies with SIGSEGV instead of its
// exit code.
//
// So the first communicator init registers this handler (after NCCL initialized its CUDA runtime,
// so it runs before the runtime's own handler). For every group still live it:
//   1. stops the watchdog (an abort it is inside of returns first) and waits for a connect in
//      progress, settling no one;
//   2. aborts the communicators, all at once on helper threads (ncclCommAbort joins NCCL's own
//      threads of that communicator);
// then returns and exit() goes on with nothing of NCCL's running. All of it is bounded by
// X_COMM_EXIT_TIMEOUT_MS (default 10000 ms). When that runs out (an abort that does not return:
// a GPU that does not drain) the handler ends the process at once with the status exit() was given
// (_exit, after flushing stdio), so nothing is torn down under a thread still inside NCCL.
// Either way it writes one line to stderr saying what it did.
//
// Everything here is a leaked heap object: objects with static storage duration are destroyed by
// the same exit() while other threads may still use them.
#include "nccl_exit.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nccl_group.h"

namespace x::comm {
namespace {

using Clock = std::chrono::steady_clock;

struct Registry {
  std::mutex mu;
  std::vector<std::weak_ptr<NcclGroup>> groups;
  std::atomic<bool> exiting{false};
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed (see above)
  return *r;
}

int64_t exit_timeout_ms() {
  const char* v = std::getenv("X_COMM_EXIT_TIMEOUT_MS");
  if (v == nullptr || *v == '\0') return 10000;
  char* end = nullptr;
  long long ms = std::strtoll(v, &end, 10);
  return end != v && *end == '\0' && ms >= 0 ? ms : 10000;
}

void say(const std::string& line) {
  std::string s = "x/comm: " + line + "\n";
  (void)!::write(STDERR_FILENO, s.data(), s.size());
}

int64_t ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// Aborts on helper threads, all at once; waits for them until `deadline`. The state is shared with
// the helpers, which may outlive the wait (then the process ends before they return).
bool abort_all(const std::vector<std::pair<const nccl::Api*, nccl::ncclComm_t>>& comms,
               Clock::time_point deadline) {
  struct Left {
    std::mutex mu;
    std::condition_variable cv;
    size_t n = 0;
  };
  auto left = std::make_shared<Left>();
  left->n = comms.size();
  for (auto [api, comm] : comms) {
    std::thread([left, api, comm] {
      api->ncclCommAbort(comm);
      std::lock_guard<std::mutex> lock(left->mu);
      left->n--;
      left->cv.notify_all();
    }).detach();
  }
  std::unique_lock<std::mutex> lock(left->mu);
  return left->cv.wait_until(lock, deadline, [&] { return left->n == 0; });
}

void on_process_exit(int status, void*) {
  Registry& reg = registry();
  reg.exiting = true;
  std::vector<std::shared_ptr<NcclGroup>> live;
  {
    std::lock_guard<std::mutex> lock(reg.mu);
    for (auto& w : reg.groups) {
      if (auto g = w.lock()) live.push_back(std::move(g));
    }
  }
  live.erase(std::remove_if(live.begin(), live.end(), [](const std::shared_ptr<NcclGroup>& g) { return !g->live(); }),
             live.end());
  if (live.empty()) return;
  const auto t0 = Clock::now();
  const int64_t budget = exit_timeout_ms();
  const auto deadline = t0 + std::chrono::milliseconds(budget);
  for (auto& g : live) g->begin_exit();
  size_t stuck = 0;
  for (auto& g : live) stuck += g->wait_quiet(deadline) ? 0 : 1;
  // Only once every watchdog and connect is out of NCCL: a connect still running may hold the
  // communicator's lock (take_comm would wait for it).
  std::vector<std::pair<const nccl::Api*, nccl::ncclComm_t>> comms;
  if (stuck == 0) {
    for (auto& g : live) {
      if (nccl::ncclComm_t c = g->take_comm(); c != nullptr && g->api() != nullptr) comms.emplace_back(g->api(), c);
    }
  }
  const bool aborted = stuck == 0 && abort_all(comms, deadline);
  const std::string what = std::to_string(live.size()) + " NCCL group(s) still live at process exit (status " +
                           std::to_string(status) + ")";
  if (aborted) {
    say(what + ": stopped their watchdogs and aborted " + std::to_string(comms.size()) + " communicator(s) in " +
        std::to_string(ms_since(t0)) + " ms; dispose groups before exiting to avoid this");
    return;
  }
  say(what + ": " +
      (stuck > 0 ? std::to_string(stuck) + " watchdog(s) or connect(s) still inside NCCL"
                 : std::string("ncclCommAbort had not returned")) +
      " after " + std::to_string(budget) +
      " ms (X_COMM_EXIT_TIMEOUT_MS); ending the process now with status " + std::to_string(status) +
      " so that CUDA is not torn down under them");
  std::fflush(nullptr);
  ::_exit(status);
}

}  // namespace

void watch_for_exit(std::weak_ptr<NcclGroup> group) {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mu);
  // Drop the entries of groups that are gone, so the list stays as long as the live groups.
  reg.groups.erase(std::remove_if(reg.groups.begin(), reg.groups.end(),
                                  [](const std::weak_ptr<NcclGroup>& w) { return w.expired(); }),
                   reg.groups.end());
  reg.groups.push_back(std::move(group));
}

void install_exit_handler() {
  static std::once_flag* once = new std::once_flag();
  std::call_once(*once, [] { ::on_exit(on_process_exit, nullptr); });
}

bool process_exiting() { return registry().exiting.load(); }

}  // namespace x::comm
