// The key-value store behind rendezvous: one interface, two implementations (a TCP store served by
// rank 0, and a file store for one host). Every call that can wait takes a timeout in milliseconds
// and returns Code::kTimeout when it runs out; nothing here blocks forever.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "x/status.h"

namespace x::comm {

class KvStore {
 public:
  virtual ~KvStore() = default;

  virtual Status set(const std::string& key, const std::string& value, int64_t timeout_ms) = 0;
  // Waits until `key` exists, then returns its value.
  virtual Status get(const std::string& key, int64_t timeout_ms, std::string* value) = 0;
  // Adds `delta` to the integer stored at key (missing = 0) and returns the new value.
  virtual Status add(const std::string& key, int64_t delta, int64_t timeout_ms, int64_t* result) = 0;
  // Sets key to `desired` when its value equals `expected` (a missing key matches an empty
  // `expected`). Returns the value after the call, as torch's compare_set does.
  virtual Status compare_set(const std::string& key, const std::string& expected,
                             const std::string& desired, int64_t timeout_ms, std::string* result) = 0;
  virtual Status remove(const std::string& key, int64_t timeout_ms, bool* existed) = 0;
  // Waits until every key exists. On timeout, `missing` lists the keys that never appeared.
  virtual Status wait(const std::vector<std::string>& keys, int64_t timeout_ms,
                      std::vector<std::string>* missing) = 0;
};

}  // namespace x::comm
