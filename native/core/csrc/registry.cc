#include "registry.h"

#include <chrono>
#include <cstdio>
#include <memory>

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

Status MemoryRegistry::remove(int device, uint64_t base, int64_t wait_ns) {
  // The caller releases the memory next: wait (bounded) until no operation runs on it.
  auto released = std::make_shared<bool>(false);
  bool found = retire(device, base, [this, released] {
    {
      std::lock_guard<std::mutex> lock(mu_);
      *released = true;
    }
    idle_cv_.notify_all();
  });
  if (!found) return Status::Invalid("no registered range starts at " + hex(base));
  std::unique_lock<std::mutex> lock(mu_);
  if (!idle_cv_.wait_for(lock, std::chrono::nanoseconds(wait_ns), [&] { return *released; })) {
    return Status::Error(Code::kTimeout, "memory at " + hex(base) +
                                             " is still used by a running stream operation after " +
                                             std::to_string(wait_ns / 1000000) + " ms");
  }
  return Status::Ok();
}

namespace {

// check()'s rules on a locked table; `found` gets the range that holds [ptr, ptr+size), if any.
template <typename Map, typename Info>
Status check_in(Map& ranges, int device, uint64_t ptr, uint64_t size, const char* what,
                bool known_required, CheckAt at, Info** found) {
  auto it = ranges.upper_bound({device, ptr});
  if (it != ranges.begin()) {
    auto& r = std::prev(it)->second;
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
      if (found != nullptr) *found = &r;
      return Status::Ok();
    }
  }
  if (!known_required) return Status::Ok();
  return Status::Invalid(std::string(what) + " " + hex(ptr) + "+" + std::to_string(size) +
                         " is not memory x manages on " +
                         (device < 0 ? std::string("cpu") : "cuda:" + std::to_string(device)) +
                         " (expected a HostBuffer or an @x/cumem allocation)");
}

}  // namespace

Status MemoryRegistry::check(int device, uint64_t ptr, uint64_t size, const char* what,
                             bool known_required, CheckAt at) const {
  std::lock_guard<std::mutex> lock(mu_);
  const RangeInfo** none = nullptr;
  return check_in(ranges_, device, ptr, size, what, known_required, at, none);
}

Status MemoryRegistry::acquire(int device, const std::vector<RangeRequest>& ranges,
                               std::vector<RangeUse>* out) {
  out->clear();
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RangeInfo*> hit(ranges.size(), nullptr);
  for (size_t i = 0; i < ranges.size(); i++) {
    if (ranges[i].bytes == 0) continue;
    X_RETURN_IF_ERROR(check_in(ranges_, device, ranges[i].ptr, ranges[i].bytes, ranges[i].what.c_str(), true,
                               CheckAt::kExecute, &hit[i]));
  }
  for (RangeInfo* r : hit) {
    if (r == nullptr) continue;
    r->users++;
    out->push_back(RangeUse{r->device, r->base, r->generation});
  }
  return Status::Ok();
}

void MemoryRegistry::release(const std::vector<RangeUse>& uses) {
  std::vector<ReleaseFn> run;
  bool idle = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const RangeUse& u : uses) {
      auto it = ranges_.find({u.device, u.base});
      if (it != ranges_.end() && it->second.generation == u.generation) {
        if (it->second.users > 0 && --it->second.users == 0) idle = true;
        continue;
      }
      auto r = retiring_.find(u.generation);  // retired while the operation ran
      if (r == retiring_.end() || r->second.users == 0) continue;
      if (--r->second.users == 0) {
        run.push_back(std::move(r->second.release_fn));
        retiring_.erase(r);
      }
    }
  }
  if (idle) idle_cv_.notify_all();
  for (auto& fn : run) {
    if (fn) fn();
  }
}

bool MemoryRegistry::retire(int device, uint64_t base, ReleaseFn release_fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ranges_.find({device, base});
    if (it == ranges_.end()) return false;
    uint32_t users = it->second.users;
    uint64_t generation = it->second.generation;
    ranges_.erase(it);
    if (users > 0) {
      retiring_[generation] = Retiring{users, std::move(release_fn)};
      return true;
    }
  }
  if (release_fn) release_fn();
  return true;
}

Status MemoryRegistry::quiesce(int device, uint64_t base, RangeState state, int64_t timeout_ns) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = ranges_.find({device, base});
  if (it == ranges_.end()) return Status::Invalid("no registered range starts at " + hex(base));
  it->second.state = state;
  uint64_t generation = it->second.generation;
  std::string owner = it->second.owner;
  auto idle = [&] {
    auto f = ranges_.find({device, base});
    return f == ranges_.end() || f->second.generation != generation || f->second.users == 0;
  };
  if (!idle_cv_.wait_for(lock, std::chrono::nanoseconds(timeout_ns), idle)) {
    return Status::Error(Code::kTimeout, "memory at " + hex(base) + " (" + owner +
                                             ") is still used by a running stream operation after " +
                                             std::to_string(timeout_ns / 1000000) + " ms");
  }
  return Status::Ok();
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
