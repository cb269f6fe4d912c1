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

struct RangeInfo {
  int device = -1;
  uint64_t base = 0;
  uint64_t size = 0;
  bool mapped = true;
  std::string owner;
};

class MemoryRegistry {
 public:
  static MemoryRegistry& instance();

  Status add(int device, uint64_t base, uint64_t size, bool mapped, std::string owner);
  Status set_mapped(int device, uint64_t base, bool mapped);
  Status remove(int device, uint64_t base);
  // OK when [ptr, ptr+size) lies in one mapped range; kAsleep if in an unmapped one; kInvalidArgument
  // naming `what` otherwise. `known_required` false lets unknown memory pass (CUDA streams, where
  // the driver validates device pointers itself).
  Status check(int device, uint64_t ptr, uint64_t size, const char* what, bool known_required) const;
  std::vector<RangeInfo> snapshot() const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<int, uint64_t>, RangeInfo> ranges_;  // keyed by (device, base)
};

std::string hex(uint64_t v);

}  // namespace x
