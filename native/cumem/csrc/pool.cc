#include "pool.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <thread>

namespace x::cumem {
namespace {

constexpr uint64_t kStagingBytes = 64ull << 20;
// Bound on waiting for a stream operation still running on a range before sleep unmaps it: one
// operation (a copy, a kernel) takes milliseconds; a minute means it hangs.
constexpr int64_t kQuiesceTimeoutNs = 60'000'000'000;
// Bound on shutdown waiting for a sleep or wake in progress (which itself may wait that long).
constexpr int64_t kShutdownWaitNs = 2 * kQuiesceTimeoutNs;

// A range whose release waits for the stream operations still running on it.
struct PendingRelease {
  std::shared_ptr<Backend> backend;
  uint64_t va = 0, padded = 0;
  bool mapped = false;
  Physical phys;
  std::shared_ptr<Status> result;  // read by the caller when the release ran at once
};

void release_range(void* user) {
  std::unique_ptr<PendingRelease> p(static_cast<PendingRelease*>(user));
  Status st = p->mapped ? p->backend->unmap(p->va, p->padded, p->phys) : Status::Ok();
  Status st2 = p->backend->release(p->va, p->padded);
  *p->result = st.ok() ? st2 : st;
}

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

Status io_error(const char* op, const std::string& path) {
  return Status::Error(Code::kInternal, std::string(op) + " " + path + " failed: " + std::strerror(errno));
}

}  // namespace

Status Pool::create(int device, const x_core_api* core, std::shared_ptr<Pool>* out) {
  if (core == nullptr || core->version != X_CORE_API_VERSION || core->size < sizeof(x_core_api)) {
    return Status::Invalid("@x/cumem needs @x/core's C table version " +
                           std::to_string(X_CORE_API_VERSION) + " (got " +
                           (core ? std::to_string(core->version) : std::string("none")) + ")");
  }
  std::unique_ptr<Backend> b;
  if (device < 0) {
    X_RETURN_IF_ERROR(make_cpu_backend(&b));
  } else {
    X_RETURN_IF_ERROR(make_cuda_backend(device, &b));
  }
  out->reset(new Pool(std::move(b), core));
  return Status::Ok();
}

Pool::~Pool() { shutdown(); }

Status Pool::map_one(Record& r) {
  int left = fail_after_.load();
  if (left == 0) {
    fail_after_.store(-1);
    return Status::Error(Code::kOutOfMemory, "injected mapping failure for " + hex(r.va));
  }
  if (left > 0) fail_after_.store(left - 1);
  X_RETURN_IF_ERROR(backend_->map(r.va, r.padded, &r.phys));
  r.mapped = true;
  return Status::Ok();
}

Status Pool::unmap_one(Record& r) {
  if (!r.mapped) return Status::Ok();
  X_RETURN_IF_ERROR(backend_->unmap(r.va, r.padded, r.phys));
  r.mapped = false;
  r.phys = {};
  return Status::Ok();
}

Status Pool::alloc(uint64_t size, bool map_now, const std::string& label, uint64_t* va,
                   uint64_t* padded) {
  if (size == 0) return Status::Invalid("allocation size must be at least 1 byte");
  uint64_t g = backend_->granularity();
  Record r;
  r.size = size;
  r.padded = (size + g - 1) / g * g;
  X_RETURN_IF_ERROR(backend_->reserve(r.padded, &r.va));
  if (map_now) {
    Status st = map_one(r);
    if (!st.ok()) {
      backend_->release(r.va, r.padded);
      if (st.code == Code::kOutOfMemory) {
        st.message = "out of memory allocating " + std::to_string(size) + " bytes: " + st.message;
      }
      return st;
    }
  }
  int rc = core_->register_range(device(), r.va, r.padded, map_now ? X_RANGE_MAPPED : X_RANGE_UNMAPPED,
                                 label.c_str());
  if (rc != X_SUCCESS) {
    unmap_one(r);
    backend_->release(r.va, r.padded);
    return Status::Error(Code::kInternal, std::string("registering the range failed: ") + core_->last_error());
  }
  *va = r.va;
  *padded = r.padded;
  std::lock_guard<std::mutex> lock(mu_);
  records_.emplace(r.va, std::move(r));
  return Status::Ok();
}

Status Pool::retire(Record& r) {
  free_backup(r);  // backups are the pool's own memory: no stream touches them
  auto result = std::make_shared<Status>();
  auto* p = new PendingRelease{backend_, r.va, r.padded, r.mapped, r.phys, result};
  r.mapped = false;
  if (core_->retire_range(device(), r.va, release_range, p) != X_SUCCESS) release_range(p);  // unregistered
  return *result;  // OK when the release waits for a stream operation
}

Status Pool::free(uint64_t va) {
  Record r;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = records_.find(va);
    if (it == records_.end()) return Status::Invalid("no allocation at " + hex(va));
    r = std::move(it->second);
    records_.erase(it);
  }
  return retire(r);
}

Status Pool::set_state(const std::vector<uint64_t>& vas, int state) {
  for (uint64_t va : vas) {
    if (core_->set_range_state(device(), va, state) != X_SUCCESS) {
      return Status::Error(Code::kInternal, std::string("set_range_state: ") + core_->last_error());
    }
  }
  return Status::Ok();
}

Status Pool::ensure_host_backup(Record& r) {
  if (r.host != nullptr) return Status::Ok();
  Status st = backend_->host_alloc(r.padded, &r.host);
  if (!st.ok()) {
    r.host = nullptr;
    st.message = "cannot allocate a " + std::to_string(r.padded) + "-byte host backup: " + st.message;
  }
  return st;
}

// Pinning host memory is slow in the driver (~2 GB/s per thread); spread it over threads. Each
// record is touched by exactly one thread, and JS serializes operations on records.
Status Pool::ensure_host_backups(const std::vector<Record*>& recs) {
  std::vector<Record*> todo;
  for (Record* r : recs) {
    if (r->host == nullptr) todo.push_back(r);
  }
  if (todo.empty()) return Status::Ok();
  unsigned n = std::min<unsigned>(8, std::max(1u, std::thread::hardware_concurrency()));
  n = std::min<unsigned>(n, static_cast<unsigned>(todo.size()));
  std::vector<Status> results(n);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < n; t++) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < todo.size() && results[t].ok(); i += n) results[t] = ensure_host_backup(*todo[i]);
    });
  }
  for (auto& th : threads) th.join();
  for (const Status& st : results) {
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

Status Pool::reserve_backups(const std::vector<uint64_t>& vas) {
  std::lock_guard<std::timed_mutex> op(op_mu_);
  std::vector<Record*> recs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t va : vas) {
      auto f = records_.find(va);
      if (f == records_.end()) return Status::Invalid("no allocation at " + hex(va));
      recs.push_back(&f->second);
    }
  }
  return ensure_host_backups(recs);
}

void Pool::free_backup(Record& r) {
  if (r.host != nullptr) backend_->host_free(r.host, r.padded);
  r.host = nullptr;
  if (!r.path.empty()) ::unlink(r.path.c_str());
  r.path.clear();
  r.backup = BackupKind::kNone;
  r.backup_valid = false;
}

void Pool::invalidate_backup(Record& r, bool retain_host) {
  if (!retain_host || r.backup != BackupKind::kHost) return free_backup(r);
  r.backup = BackupKind::kNone;
  r.backup_valid = false;
}

Status Pool::staging(void** out) {
  if (staging_ == nullptr) X_RETURN_IF_ERROR(backend_->host_alloc(kStagingBytes, &staging_));
  *out = staging_;
  return Status::Ok();
}

Status Pool::write_disk(const Record& r, const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("open", path);
  void* buf = nullptr;
  Status st = staging(&buf);
  for (uint64_t off = 0; st.ok() && off < r.padded; off += kStagingBytes) {
    uint64_t n = std::min(kStagingBytes, r.padded - off);
    st = backend_->to_host(buf, r.va + off, n);
    if (st.ok()) st = backend_->sync_copies();
    if (st.ok() && ::pwrite(fd, buf, n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
      st = io_error("write", path);
    }
  }
  if (::close(fd) != 0 && st.ok()) st = io_error("close", path);
  return st;
}

Status Pool::read_disk(const Record& r) {
  int fd = ::open(r.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("open", r.path);
  void* buf = nullptr;
  Status st = staging(&buf);
  for (uint64_t off = 0; st.ok() && off < r.padded; off += kStagingBytes) {
    uint64_t n = std::min(kStagingBytes, r.padded - off);
    if (::pread(fd, buf, n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
      st = io_error("read", r.path);
      break;
    }
    st = backend_->from_host(r.va + off, buf, n);
    if (st.ok()) st = backend_->sync_copies();  // the staging chunk is reused next
  }
  ::close(fd);
  return st;
}

Status Pool::sleep(const std::vector<SleepItem>& items) {
  std::lock_guard<std::timed_mutex> op(op_mu_);
  // Work on copies of the records; the table is only locked to read and to publish results.
  std::vector<Record*> recs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const SleepItem& it : items) {
      auto f = records_.find(it.va);
      if (f == records_.end()) return Status::Invalid("no allocation at " + hex(it.va));
      recs.push_back(&f->second);  // std::map nodes are stable; JS serializes ops on a record
    }
  }
  // Pin missing host backups first (in parallel); nothing is copied or unmapped yet.
  std::vector<Record*> need_host;
  for (size_t i = 0; i < items.size(); i++) {
    const SleepItem& it = items[i];
    Record& r = *recs[i];
    bool reuse = it.reuse_valid_backup && r.backup_valid && r.backup == it.offload;
    if (r.mapped && it.offload == BackupKind::kHost && !reuse) need_host.push_back(&r);
  }
  X_RETURN_IF_ERROR(ensure_host_backups(need_host));
  X_RETURN_IF_ERROR(backend_->quiesce());
  // Streams nobody registered may still run an operation on these ranges (the JS side drained only
  // the registered ones): refuse new ones and wait for those running before copying and unmapping.
  // On failure the caller marks the ranges mapped again; nothing was copied or unmapped.
  for (Record* r : recs) {
    if (!r->mapped) continue;
    if (core_->quiesce_range(device(), r->va, X_RANGE_UNMAPPED, kQuiesceTimeoutNs) != X_SUCCESS) {
      return Status::Error(Code::kTimeout, std::string("sleep: ") + core_->last_error());
    }
  }
  for (Record* r : need_host) X_RETURN_IF_ERROR(backend_->to_host(r->host, r->va, r->padded));
  X_RETURN_IF_ERROR(backend_->sync_copies());
  for (size_t i = 0; i < items.size(); i++) {
    const SleepItem& it = items[i];
    Record& r = *recs[i];
    if (!r.mapped) continue;
    if (it.offload == BackupKind::kDisk && !(it.reuse_valid_backup && r.backup_valid && r.backup == BackupKind::kDisk)) {
      if (r.host != nullptr) {
        backend_->host_free(r.host, r.padded);
        r.host = nullptr;
      }
      X_RETURN_IF_ERROR(write_disk(r, it.path));
      r.path = it.path;
    }
  }
  // Every copy is done: publish backups, then unmap.
  for (size_t i = 0; i < items.size(); i++) {
    const SleepItem& it = items[i];
    Record& r = *recs[i];
    if (!r.mapped) continue;
    if (it.offload == BackupKind::kNone) {
      free_backup(r);
    } else {
      r.backup = it.offload;
      r.backup_valid = true;
    }
  }
  Status result = Status::Ok();
  for (Record* r : recs) {
    Status st = unmap_one(*r);
    if (!st.ok() && result.ok()) result = st;
  }
  return result;
}

Status Pool::wake(const std::vector<WakeItem>& items, uint64_t* failed_va) {
  std::lock_guard<std::timed_mutex> op(op_mu_);
  std::vector<Record*> recs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const WakeItem& it : items) {
      auto f = records_.find(it.va);
      if (f == records_.end()) return Status::Invalid("no allocation at " + hex(it.va));
      recs.push_back(&f->second);
    }
  }
  std::vector<Record*> mapped_here;
  Status st = Status::Ok();
  // Map and start host restores in one pass, so the copy engine works while later ranges map.
  for (size_t i = 0; i < items.size() && st.ok(); i++) {
    Record& r = *recs[i];
    if (r.mapped) continue;
    st = map_one(r);
    if (!st.ok()) {
      *failed_va = r.va;
      break;
    }
    mapped_here.push_back(&r);
    if (items[i].restore && r.backup == BackupKind::kHost && r.backup_valid) {
      st = backend_->from_host(r.va, r.host, r.padded);
    }
  }
  for (size_t i = 0; i < items.size() && st.ok(); i++) {
    Record& r = *recs[i];
    if (items[i].restore && r.backup == BackupKind::kDisk && r.backup_valid) st = read_disk(r);
    if (st.ok() && items[i].poison) st = backend_->fill(r.va, r.padded, 0xFF);
  }
  Status synced = backend_->sync_copies();
  if (st.ok()) st = synced;
  if (!st.ok()) {
    for (Record* r : mapped_here) unmap_one(*r);  // all or nothing; backups stay for a retry
    return st;
  }
  for (size_t i = 0; i < items.size(); i++) {
    Record& r = *recs[i];
    if (items[i].restore && items[i].keep_backup) continue;  // still valid until written
    invalidate_backup(r, items[i].retain_host);
  }
  return Status::Ok();
}

void Pool::drop_backup(uint64_t va) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(va);
  if (it != records_.end()) free_backup(it->second);
}

void Pool::mark_dirty(uint64_t va) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(va);
  if (it != records_.end()) it->second.backup_valid = false;
}

Status Pool::info(uint64_t va, RecordInfo* out) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(va);
  if (it == records_.end()) return Status::Invalid("no allocation at " + hex(va));
  const Record& r = it->second;
  out->size = r.size;
  out->padded = r.padded;
  out->mapped = r.mapped;
  out->backed_up = r.backup == BackupKind::kNone ? 0 : r.padded;
  out->host_reserved = r.host != nullptr ? r.padded : 0;
  return Status::Ok();
}

void Pool::shutdown() {
  // A sleep or wake still running (its thread outlives a worker torn down mid-sleep) finishes
  // first. If it hangs, leak everything rather than unmap under it.
  std::unique_lock<std::timed_mutex> op(op_mu_, std::defer_lock);
  if (!op.try_lock_for(std::chrono::nanoseconds(kShutdownWaitNs))) return;
  std::map<uint64_t, Record> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_) return;
    shut_ = true;
    all.swap(records_);
  }
  // Never unmap under running work: the device is synchronized (CUDA), and a range a CPU stream
  // operation still runs on (a worker torn down mid-step) is released when that operation returns.
  if (!all.empty()) backend_->quiesce();
  for (auto& [va, r] : all) retire(r);
  if (staging_ != nullptr) backend_->host_free(staging_, kStagingBytes);
  staging_ = nullptr;
}

}  // namespace x::cumem
