// The memory registry: which ranges of memory x manages, per device, and whether each is mapped.
// CPU stream operations check it at enqueue and again at execution, so a bad pointer or a range
// put to sleep by @x/cumem becomes a typed error, never a segfault.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "x/status.h"

namespace x {

enum class RangeState { kUnmapped = 0, kMapped = 1, kDraining = 2 };

struct RangeInfo {
  int device = -1;
  uint64_t base = 0;
  uint64_t size = 0;
  RangeState state = RangeState::kMapped;
  std::string owner;
  // Unique per registration (never reused), so a graph can tell "the same allocation" from "a new
  // allocation that happens to sit at the same address".
  uint64_t generation = 0;
  uint32_t users = 0;  // stream operations running on the range now (see acquire)
};

// When a check happens: at enqueue (draining memory refused) or when queued work runs (draining
// memory still usable: the sleep that drains it waits for exactly this work).
enum class CheckAt { kEnqueue, kExecute };

// A range a stream operation reads or writes, as named at enqueue.
struct RangeRequest {
  uint64_t ptr = 0;
  uint64_t bytes = 0;
  std::string what = "pointer";  // names the argument in errors
};

// One registration an operation runs on (returned by acquire, handed back to release).
struct RangeUse {
  int device = -1;
  uint64_t base = 0;
  uint64_t generation = 0;
};

// Called once when a retired range is no longer used by any operation (see retire).
using ReleaseFn = std::function<void()>;

class MemoryRegistry {
 public:
  static MemoryRegistry& instance();

  Status add(int device, uint64_t base, uint64_t size, RangeState state, std::string owner);
  Status set_state(int device, uint64_t base, RangeState state);
  // Unregisters a range whose memory the caller releases next, after waiting up to `wait_ns` for
  // operations still running on it (kTimeout: one still does; do not release the memory then).
  Status remove(int device, uint64_t base, int64_t wait_ns = 10'000'000'000);
  // OK when [ptr, ptr+size) lies in one mapped range; kAsleep if in an unmapped one; kInvalidArgument
  // naming `what` otherwise. `known_required` false lets unknown memory pass (CUDA streams, where
  // the driver validates device pointers itself).
  Status check(int device, uint64_t ptr, uint64_t size, const char* what, bool known_required,
               CheckAt at = CheckAt::kEnqueue) const;
  std::vector<RangeInfo> snapshot() const;
  // The registered range of `device` containing `ptr`, if any.
  bool find(int device, uint64_t ptr, RangeInfo* out) const;
  // OK when the registration `generation` at (device, base) still exists and is mapped; kAsleep
  // when it sleeps; kInvalidArgument naming `what` when it was freed (or replaced).
  Status check_generation(int device, uint64_t base, uint64_t generation, const char* what) const;

  // Lifetime of memory under running stream work. A stream operation acquires its ranges when it
  // starts (each must be usable as check() at kExecute says; all or none) and releases them when it
  // returns. Memory is only ever released once no operation uses it, so freeing, unmapping or
  // tearing down an environment while a stream thread still copies into the memory cannot fault.
  Status acquire(int device, const std::vector<RangeRequest>& ranges, std::vector<RangeUse>* out);
  void release(const std::vector<RangeUse>& uses);
  // Unregisters a range whose memory is about to be released: new checks and acquires fail as for
  // freed memory at once (queued work that names it is cancelled when it reaches the front). Runs
  // `release_fn` now, on the calling thread, when no operation uses the range; otherwise it runs
  // once, on the thread whose operation releases the range last. False when no range starts at base
  // (release_fn is not called).
  bool retire(int device, uint64_t base, ReleaseFn release_fn);
  // Sets `state` (unmapped: no operation may start on the range any more), then waits up to
  // `timeout_ns` for the operations running on it to finish (before a mapping change).
  Status quiesce(int device, uint64_t base, RangeState state, int64_t timeout_ns);

 private:
  // A retired range still used by running operations, keyed by its generation.
  struct Retiring {
    uint32_t users = 0;
    ReleaseFn release_fn;
  };

  mutable std::mutex mu_;
  std::condition_variable idle_cv_;  // a range's users dropped to 0 (quiesce waits on it)
  uint64_t next_generation_ = 1;
  std::map<std::pair<int, uint64_t>, RangeInfo> ranges_;  // keyed by (device, base)
  std::map<uint64_t, Retiring> retiring_;
};

std::string hex(uint64_t v);

}  // namespace x
