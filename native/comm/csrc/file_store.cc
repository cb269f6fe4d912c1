#include "file_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace x::comm {
namespace {

using Clock = std::chrono::steady_clock;

Status store_error(const std::string& msg) {
  Status s = Status::Error(Code::kInternal, msg);
  s.operation = "store";
  return s;
}

Status timeout_error(const std::string& what, int64_t timeout_ms, const std::string& dir) {
  Status s = Status::Error(Code::kTimeout, "store " + what + " timed out after " +
                                               std::to_string(timeout_ms) + " ms (file store " + dir + ")");
  s.operation = "store." + what;
  return s;
}

// Poll interval: short at first (rendezvous of processes started together), then 5 ms.
void backoff(int& round) {
  std::this_thread::sleep_for(std::chrono::microseconds(round < 50 ? 200 : 5000));
  round++;
}

}  // namespace

Status FileStore::open(const std::string& dir, std::shared_ptr<FileStore>* out) {
  if (dir.empty()) return Status::Invalid("Expected a directory path for file store but received \"\"");
  if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST)
    return store_error("cannot create file store directory " + dir + ": " + std::strerror(errno));
  out->reset(new FileStore(dir));
  return Status::Ok();
}

// Keys may hold '/' and other bytes: file names are the key in hex.
std::string FileStore::path_of(const std::string& key) const {
  static const char* hex = "0123456789abcdef";
  std::string name;
  name.reserve(key.size() * 2);
  for (unsigned char c : key) {
    name.push_back(hex[c >> 4]);
    name.push_back(hex[c & 15]);
  }
  return dir_ + "/k_" + name;
}

bool FileStore::read(const std::string& key, std::string* value) const {
  std::ifstream f(path_of(key), std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  *value = ss.str();
  return true;
}

Status FileStore::write(const std::string& key, const std::string& value) const {
  std::string path = path_of(key);
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." +
                    std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(value.data(), static_cast<std::streamsize>(value.size()));
    if (!f) return store_error("cannot write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return store_error("cannot rename " + tmp + ": " + std::strerror(errno));
  return Status::Ok();
}

Status FileStore::lock(int64_t timeout_ms, int* fd) const {
  std::string path = dir_ + "/.lock";
  int f = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (f < 0) return store_error("cannot open " + path + ": " + std::strerror(errno));
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int round = 0;
  while (::flock(f, LOCK_EX | LOCK_NB) != 0) {
    if (Clock::now() >= deadline) {
      ::close(f);
      return timeout_error("lock", timeout_ms, dir_);
    }
    backoff(round);
  }
  *fd = f;
  return Status::Ok();
}

Status FileStore::set(const std::string& key, const std::string& value, int64_t) {
  return write(key, value);
}

Status FileStore::get(const std::string& key, int64_t timeout_ms, std::string* value) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int round = 0;
  while (!read(key, value)) {
    if (Clock::now() >= deadline) return timeout_error("get('" + key + "')", timeout_ms, dir_);
    backoff(round);
  }
  return Status::Ok();
}

Status FileStore::add(const std::string& key, int64_t delta, int64_t timeout_ms, int64_t* result) {
  int fd;
  X_RETURN_IF_ERROR(lock(timeout_ms, &fd));
  std::string cur;
  int64_t v = 0;
  Status st;
  if (read(key, &cur)) {
    char* end = nullptr;
    errno = 0;
    v = std::strtoll(cur.c_str(), &end, 10);
    if (errno != 0 || end == cur.c_str() || *end != '\0')
      st = store_error("store add: the value of '" + key + "' is not an integer");
  }
  if (st.ok()) {
    v += delta;
    st = write(key, std::to_string(v));
    *result = v;
  }
  ::close(fd);
  return st;
}

Status FileStore::compare_set(const std::string& key, const std::string& expected,
                              const std::string& desired, int64_t timeout_ms, std::string* result) {
  int fd;
  X_RETURN_IF_ERROR(lock(timeout_ms, &fd));
  std::string cur;
  bool exists = read(key, &cur);
  Status st;
  if ((!exists && expected.empty()) || (exists && cur == expected)) {
    st = write(key, desired);
    *result = desired;
  } else {
    *result = exists ? cur : std::string();
  }
  ::close(fd);
  return st;
}

Status FileStore::remove(const std::string& key, int64_t timeout_ms, bool* existed) {
  int fd;
  X_RETURN_IF_ERROR(lock(timeout_ms, &fd));
  *existed = ::unlink(path_of(key).c_str()) == 0;
  ::close(fd);
  return Status::Ok();
}

Status FileStore::wait(const std::vector<std::string>& keys, int64_t timeout_ms,
                       std::vector<std::string>* missing) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int round = 0;
  for (;;) {
    std::vector<std::string> absent;
    for (auto& k : keys) {
      if (::access(path_of(k).c_str(), F_OK) != 0) absent.push_back(k);
    }
    if (absent.empty()) return Status::Ok();
    if (Clock::now() >= deadline) {
      if (missing != nullptr) *missing = std::move(absent);
      return timeout_error("wait", timeout_ms, dir_);
    }
    backoff(round);
  }
}

}  // namespace x::comm
