#include "registry.h"

#include <cstdio>

namespace x {

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

MemoryRegistry& MemoryRegistry::instance() {
  static MemoryRegistry* r = new MemoryRegistry();  // never destroyed: used by threads at exit
  return *r;
}

Status MemoryRegistry::add(int device, uint64_t base, uint64_t size, RangeState state,
                           std::string owner) {
  if (size == 0) return Status::Invalid("cannot register an empty range at " + hex(base));
  std::lock_guard<std::mutex> lock(mu_);
  auto key = std::make_pair(device, base);
  // Reject overlap with the neighbour below and above (ranges of one device never overlap).
  auto it = ranges_.lower_bound(key);
  if (it != ranges_.end() && it->first.first == device && it->first.second < base + size) {
    return Status::Invalid("range " + hex(base) + "+" + std::to_string(size) +
                           " overlaps a registered range at " + hex(it->first.second));
  }
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->first.first == device && prev->second.base + prev->second.size > base) {
      return Status::Invalid("range " + hex(base) + " overlaps a registered range at " +
                             hex(prev->second.base));
    }
  }
  ranges_.emplace(key, RangeInfo{device, base, size, state, std::move(owner), next_generation_++});
  return Status::Ok();
}

Status MemoryRegistry::set_state(int device, uint64_t base, RangeState state) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ranges_.find({device, base});
  if (it == ranges_.end()) return Status::Invalid("no registered range starts at " + hex(base));
  it->second.state = state;
  return Status::Ok();
}

Status MemoryRegistry::remove(int device, uint64_t base) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ranges_.erase({device, base}) == 0) {
    return Status::Invalid("no registered range starts at " + hex(base));
  }
  return Status::Ok();
}

Status MemoryRegistry::check(int device, uint64_t ptr, uint64_t size, const char* what,
                             bool known_required, CheckAt at) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ranges_.upper_bound({device, ptr});
  if (it != ranges_.begin()) {
    const RangeInfo& r = std::prev(it)->second;
    if (r.device == device && ptr >= r.base && ptr < r.base + r.size) {
      if (size > r.base + r.size - ptr) {
        return Status::Invalid(std::string(what) + " " + hex(ptr) + "+" + std::to_string(size) +
                               " runs past the end of its allocation (" + r.owner + ", " +
                               std::to_string(r.size) + " bytes at " + hex(r.base) + ")");
      }
      bool usable = r.state == RangeState::kMapped ||
                    (r.state == RangeState::kDraining && at == CheckAt::kExecute);
      if (!usable) {
        return Status::Error(Code::kAsleep, std::string(what) + " " + hex(ptr) +
                                                " lies in memory that is asleep (" + r.owner +
                                                "); wake it before use");
      }
      return Status::Ok();
    }
  }
  if (!known_required) return Status::Ok();
  return Status::Invalid(std::string(what) + " " + hex(ptr) + "+" + std::to_string(size) +
                         " is not memory x manages on " +
                         (device < 0 ? std::string("cpu") : "cuda:" + std::to_string(device)) +
                         " (expected a HostBuffer or an @x/cumem allocation)");
}

bool MemoryRegistry::find(int device, uint64_t ptr, RangeInfo* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ranges_.upper_bound({device, ptr});
  if (it == ranges_.begin()) return false;
  const RangeInfo& r = std::prev(it)->second;
  if (r.device != device || ptr < r.base || ptr >= r.base + r.size) return false;
  *out = r;
  return true;
}

Status MemoryRegistry::check_generation(int device, uint64_t base, uint64_t generation,
                                        const char* what) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ranges_.find({device, base});
  if (it == ranges_.end() || it->second.generation != generation) {
    return Status::Invalid(std::string(what) + ": memory at " + hex(base) +
                           " that the graph was captured with was freed" +
                           (it == ranges_.end() ? "" : " and replaced by another allocation") +
                           "; a graph may only use buffers that outlive it (capture it again)");
  }
  if (it->second.state != RangeState::kMapped) {
    return Status::Error(Code::kAsleep, std::string(what) + ": memory at " + hex(base) + " (" +
                                            it->second.owner +
                                            ") that the graph uses is asleep; wake it before launching");
  }
  return Status::Ok();
}

std::vector<RangeInfo> MemoryRegistry::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RangeInfo> out;
  out.reserve(ranges_.size());
  for (auto& [k, v] : ranges_) out.push_back(v);
  return out;
}

}  // namespace x
