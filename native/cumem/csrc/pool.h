// One device's allocations: a table keyed by virtual address, each entry with its size, mapping,
// physical handle and backup. The JS Allocator owns policy (tags, levels, hooks, barriers); the
// Pool owns mechanics and never holds its lock while copying.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "x/core_api.h"

namespace x::cumem {

enum class BackupKind { kNone = 0, kHost = 1, kDisk = 2 };

struct Record {
  uint64_t va = 0;
  uint64_t size = 0;    // bytes asked for
  uint64_t padded = 0;  // bytes reserved and mapped (size rounded up to the granularity)
  bool mapped = false;
  Physical phys;
  BackupKind backup = BackupKind::kNone;
  void* host = nullptr;    // host backup (kHost)
  std::string path;        // backup file (kDisk)
  bool backup_valid = false;  // the backup holds the current contents
};

struct SleepItem {
  uint64_t va = 0;
  BackupKind offload = BackupKind::kNone;  // kNone: discard
  std::string path;                        // for kDisk
  bool reuse_valid_backup = false;         // skip the copy when the backup is still valid
};

struct WakeItem {
  uint64_t va = 0;
  bool restore = false;      // copy the backup back
  bool poison = false;       // fill 0xFF (discarded contents)
  bool keep_backup = false;  // keep the backup after restoring (valid until written)
  bool retain_host = false;  // keep the host memory of a dropped backup for the next sleep
};

struct RecordInfo {
  uint64_t size = 0, padded = 0;
  bool mapped = false;
  uint64_t backed_up = 0;      // bytes of valid backup (host or disk)
  uint64_t host_reserved = 0;  // bytes of host memory held for backups, valid or not
};

class Pool {
 public:
  static Status create(int device, const x_core_api* core, std::shared_ptr<Pool>* out);
  ~Pool();

  int device() const { return backend_->device(); }
  uint64_t granularity() const { return backend_->granularity(); }

  Status alloc(uint64_t size, bool map_now, const std::string& label, uint64_t* va, uint64_t* padded);
  Status free(uint64_t va);
  Status set_state(const std::vector<uint64_t>& vas, int state);  // X_RANGE_* in the core registry
  // Sleep mechanics: quiesce the device, copy offloaded contents out, unmap. All or nothing: if any
  // copy fails nothing has been unmapped.
  Status sleep(const std::vector<SleepItem>& items);
  // Wake mechanics: map every item (all or nothing: on failure everything this call mapped is
  // unmapped again and `failed_va` names the allocation), restore backups, poison, synchronize.
  Status wake(const std::vector<WakeItem>& items, uint64_t* failed_va);
  // Allocates (pins) host backup memory for the given allocations now, on several threads, so a
  // later sleep only copies.
  Status reserve_backups(const std::vector<uint64_t>& vas);
  void drop_backup(uint64_t va);
  void mark_dirty(uint64_t va);
  Status info(uint64_t va, RecordInfo* out);
  // Testing: the next `after` maps succeed, the one after fails with out-of-memory (-1: never).
  void inject_map_failure(int after) { fail_after_.store(after); }
  // Frees everything (any state). Idempotent.
  void shutdown();

 private:
  Pool(std::unique_ptr<Backend> b, const x_core_api* core) : backend_(std::move(b)), core_(core) {}
  // Unregisters a record's range and releases its memory once no stream operation runs on it (at
  // once, or on the stream thread that finishes last); its backup goes now.
  Status retire(Record& r);
  Status map_one(Record& r);
  Status unmap_one(Record& r);
  Status ensure_host_backup(Record& r);
  Status ensure_host_backups(const std::vector<Record*>& recs);
  void free_backup(Record& r);
  // Drops the backup's contents; with retain_host its host memory stays for the next sleep.
  void invalidate_backup(Record& r, bool retain_host);
  Status write_disk(const Record& r, const std::string& path);
  Status read_disk(const Record& r);
  Status staging(void** out);

  // Shared with releases deferred to a stream thread (see retire), which may outlive the pool.
  std::shared_ptr<Backend> backend_;
  const x_core_api* core_;
  std::mutex mu_;  // guards records_; never held across copies
  // Held by sleep, wake and reserve_backups for their whole run (they work on records outside mu_)
  // and by shutdown, so that an environment torn down mid-sleep never frees a record or unmaps a
  // range under the thread still copying it.
  std::timed_mutex op_mu_;
  std::map<uint64_t, Record> records_;
  std::atomic<int> fail_after_{-1};
  void* staging_ = nullptr;  // pinned chunk for disk transfers
  bool shut_ = false;
};

}  // namespace x::cumem
