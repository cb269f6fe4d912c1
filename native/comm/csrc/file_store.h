// A KvStore in a directory, for ranks on one host: one file per key (written to a temp file and
// renamed, so readers never see half a value); add / compare_set / delete hold an flock on
// <dir>/.lock. Waits poll the directory every millisecond or so until their deadline.
#pragma once

#include "kv_store.h"

namespace x::comm {

class FileStore : public KvStore {
 public:
  static Status open(const std::string& dir, std::shared_ptr<FileStore>* out);

  Status set(const std::string& key, const std::string& value, int64_t timeout_ms) override;
  Status get(const std::string& key, int64_t timeout_ms, std::string* value) override;
  Status add(const std::string& key, int64_t delta, int64_t timeout_ms, int64_t* result) override;
  Status compare_set(const std::string& key, const std::string& expected, const std::string& desired,
                     int64_t timeout_ms, std::string* result) override;
  Status remove(const std::string& key, int64_t timeout_ms, bool* existed) override;
  Status wait(const std::vector<std::string>& keys, int64_t timeout_ms,
              std::vector<std::string>* missing) override;

 private:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {}
  std::string path_of(const std::string& key) const;
  bool read(const std::string& key, std::string* value) const;
  Status write(const std::string& key, const std::string& value) const;
  Status lock(int64_t timeout_ms, int* fd) const;

  std::string dir_;
};

}  // namespace x::comm
