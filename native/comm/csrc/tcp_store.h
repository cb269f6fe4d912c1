// The TCP rendezvous store: a poll-based server (rank 0 runs it on its own thread) and a client.
// Waiting requests (get of a missing key, wait) are parked on the server and answered when the key
// appears; the client bounds every call with a deadline and drops the connection when it passes, which
// also drops the parked request on the server. Nothing blocks without a timeout.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kv_store.h"

namespace x::comm {

class TcpStoreServer {
 public:
  // Listens on host:port (port 0 picks a free one; see port()).
  static Status start(const std::string& host, int port, std::unique_ptr<TcpStoreServer>* out);
  ~TcpStoreServer();
  int port() const { return port_; }
  // Closes every connection and joins the server thread. Idempotent.
  void stop();

 private:
  struct Conn {
    std::string in;
    std::string out;
    std::string parked;  // a request waiting for keys; empty when none
  };
  TcpStoreServer() = default;
  void run();
  // Returns false when the request must wait (parked); else fills `reply`.
  bool handle(const std::string& req, std::string* reply, bool* mutated);
  void serve(int fd, Conn& c);

  int listen_fd_ = -1;
  int wake_fd_[2] = {-1, -1};
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::map<std::string, std::string> data_;  // owned by the server thread
  std::map<int, Conn> conns_;
};

class TcpStoreClient : public KvStore {
 public:
  // Connects to host:port, retrying while the server is not up yet, for at most timeout_ms.
  static Status connect(const std::string& host, int port, int64_t timeout_ms,
                        std::shared_ptr<TcpStoreClient>* out);
  ~TcpStoreClient() override;

  Status set(const std::string& key, const std::string& value, int64_t timeout_ms) override;
  Status get(const std::string& key, int64_t timeout_ms, std::string* value) override;
  Status add(const std::string& key, int64_t delta, int64_t timeout_ms, int64_t* result) override;
  Status compare_set(const std::string& key, const std::string& expected, const std::string& desired,
                     int64_t timeout_ms, std::string* result) override;
  Status remove(const std::string& key, int64_t timeout_ms, bool* existed) override;
  Status wait(const std::vector<std::string>& keys, int64_t timeout_ms,
              std::vector<std::string>* missing) override;

 private:
  TcpStoreClient(std::string host, int port) : host_(std::move(host)), port_(port) {}
  // One request/response on a pooled connection (several threads may call at once: a gloo
  // rendezvous can wait while JS sets a key).
  Status call(const std::string& what, const std::string& req, int64_t timeout_ms, std::string* reply);

  std::string host_;
  int port_;
  std::mutex mu_;
  std::vector<int> idle_;
};

}  // namespace x::comm
