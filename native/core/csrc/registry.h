// The memory registry: which ranges of memory x manages, per device, and whether each is mapped.
// CPU stream operations check it at enqueue and again at execution, so a bad pointer or a range
// put to sleep by @x/cumem becomes a typed error, never a segfault.
#pragma once

#include <cstdint>
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
};

// When a check happens: at enqueue (draining memory refused) or when queued work runs (draining
// memory still usable: the sleep that drains it waits for exactly this work).
enum class CheckAt { kEnqueue, kExecute };

class MemoryRegistry {
 public:
  static MemoryRegistry& instance();

  Status add(int device, uint64_t base, uint64_t size, RangeState state, std::string owner);
  Status set_state(int device, uint64_t base, RangeState state);
  Status remove(int device, uint64_t base);
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

 private:
  mutable std::mutex mu_;
  uint64_t next_generation_ = 1;
  std::map<std::pair<int, uint64_t>, RangeInfo> ranges_;  // keyed by (device, base)
};

std::string hex(uint64_t v);

}  // namespace x
