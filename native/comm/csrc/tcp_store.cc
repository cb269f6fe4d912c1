#include "tcp_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace x::comm {
namespace {

enum Cmd : uint8_t { kSet = 1, kGet = 2, kAdd = 3, kCas = 4, kDel = 5, kWait = 6, kMissing = 7 };

using Clock = std::chrono::steady_clock;

// ---- wire format: u32 length-prefixed frames; strings are u32 length + bytes; integers LE ----
void put_u32(std::string& b, uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
void put_i64(std::string& b, int64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& b, const std::string& s) {
  put_u32(b, static_cast<uint32_t>(s.size()));
  b += s;
}
std::string frame(const std::string& body) {
  std::string f;
  put_u32(f, static_cast<uint32_t>(body.size()));
  return f + body;
}

struct Reader {
  const std::string& b;
  size_t pos = 0;
  bool ok = true;
  uint32_t u32() {
    if (pos + 4 > b.size()) return ok = false, 0;
    uint32_t v;
    std::memcpy(&v, b.data() + pos, 4);
    pos += 4;
    return v;
  }
  int64_t i64() {
    if (pos + 8 > b.size()) return ok = false, 0;
    int64_t v;
    std::memcpy(&v, b.data() + pos, 8);
    pos += 8;
    return v;
  }
  uint8_t u8() {
    if (pos + 1 > b.size()) return ok = false, 0;
    return static_cast<uint8_t>(b[pos++]);
  }
  std::string str() {
    uint32_t n = u32();
    if (!ok || pos + n > b.size()) return ok = false, std::string();
    std::string s = b.substr(pos, n);
    pos += n;
    return s;
  }
};

std::string errno_text(int e) { return std::string(std::strerror(e)); }

Status comm_error(const std::string& msg) {
  Status s = Status::Error(Code::kInternal, msg);
  s.operation = "store";
  return s;
}

int64_t remaining_ms(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return ms < 0 ? 0 : ms;
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

// Waits for `events` on fd until the deadline. 1: ready, 0: timed out, -1: error (errno set).
int wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int64_t ms = remaining_ms(deadline);
    int r = ::poll(&p, 1, static_cast<int>(ms > 1000000000 ? 1000000000 : ms));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return 0;
    return 1;
  }
}

// ---- client-side socket helpers ----
Status send_all(int fd, const std::string& data, Clock::time_point deadline, bool* timed_out) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      int r = wait_fd(fd, POLLOUT, deadline);
      if (r == 0) return *timed_out = true, comm_error("timed out");
      if (r < 0) return comm_error("poll: " + errno_text(errno));
      continue;
    }
    return comm_error("send: " + errno_text(errno));
  }
  return Status::Ok();
}

Status recv_exact(int fd, size_t len, std::string* out, Clock::time_point deadline, bool* timed_out) {
  out->resize(len);
  size_t off = 0;
  while (off < len) {
    ssize_t n = ::recv(fd, out->data() + off, len - off, 0);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return comm_error("connection closed by the store server");
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      int r = wait_fd(fd, POLLIN, deadline);
      if (r == 0) return *timed_out = true, comm_error("timed out");
      if (r < 0) return comm_error("poll: " + errno_text(errno));
      continue;
    }
    return comm_error("recv: " + errno_text(errno));
  }
  return Status::Ok();
}

Status resolve(const std::string& host, int port, bool passive, addrinfo** out) {
  addrinfo hints{};
  hints.ai_family = AF_INET;  // IPv4 keeps loopback and hostnames unambiguous across ranks
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  std::string p = std::to_string(port);
  int r = getaddrinfo(host.empty() ? nullptr : host.c_str(), p.c_str(), &hints, out);
  if (r != 0) return comm_error("cannot resolve store host '" + host + "': " + gai_strerror(r));
  return Status::Ok();
}

}  // namespace

// ================================ server ================================

Status TcpStoreServer::start(const std::string& host, int port, std::unique_ptr<TcpStoreServer>* out) {
  addrinfo* ai = nullptr;
  X_RETURN_IF_ERROR(resolve(host, port, true, &ai));
  int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(ai);
    return comm_error("socket: " + errno_text(errno));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    // The master address may name this host by an address we cannot bind: listen on all.
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_port = htons(static_cast<uint16_t>(port));
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    if (errno != EADDRNOTAVAIL || ::bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0) {
      int e = errno;
      freeaddrinfo(ai);
      ::close(fd);
      return comm_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + errno_text(e));
    }
  }
  freeaddrinfo(ai);
  if (::listen(fd, 512) != 0) {
    int e = errno;
    ::close(fd);
    return comm_error("listen: " + errno_text(e));
  }
  sockaddr_in bound{};
  socklen_t len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  set_nonblocking(fd);

  std::unique_ptr<TcpStoreServer> s(new TcpStoreServer());
  s->listen_fd_ = fd;
  s->port_ = ntohs(bound.sin_port);
  if (::pipe2(s->wake_fd_, O_CLOEXEC | O_NONBLOCK) != 0) return comm_error("pipe: " + errno_text(errno));
  TcpStoreServer* raw = s.get();
  s->thread_ = std::thread([raw] { raw->run(); });
  *out = std::move(s);
  return Status::Ok();
}

TcpStoreServer::~TcpStoreServer() { stop(); }

void TcpStoreServer::stop() {
  if (stopping_.exchange(true)) return;
  if (wake_fd_[1] >= 0) {
    char c = 1;
    (void)!::write(wake_fd_[1], &c, 1);
  }
  if (thread_.joinable()) thread_.join();
  for (auto& [fd, _] : conns_) ::close(fd);
  conns_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int& f : wake_fd_) {
    if (f >= 0) ::close(f);
    f = -1;
  }
  listen_fd_ = -1;
}

bool TcpStoreServer::handle(const std::string& req, std::string* reply, bool* mutated) {
  Reader r{req};
  uint8_t cmd = r.u8();
  std::string body;
  auto fail = [&](const std::string& msg) {
    body.assign(1, '\1');
    put_str(body, msg);
    *reply = frame(body);
    return true;
  };
  body.assign(1, '\0');
  switch (cmd) {
    case kSet: {
      std::string k = r.str(), v = r.str();
      if (!r.ok) return fail("malformed set");
      data_[k] = std::move(v);
      *mutated = true;
      break;
    }
    case kGet: {
      std::string k = r.str();
      if (!r.ok) return fail("malformed get");
      auto it = data_.find(k);
      if (it == data_.end()) return false;
      put_str(body, it->second);
      break;
    }
    case kAdd: {
      std::string k = r.str();
      int64_t d = r.i64();
      if (!r.ok) return fail("malformed add");
      int64_t v = 0;
      auto it = data_.find(k);
      if (it != data_.end()) {
        char* end = nullptr;
        errno = 0;
        v = std::strtoll(it->second.c_str(), &end, 10);
        if (errno != 0 || end == it->second.c_str() || *end != '\0')
          return fail("add: the value of '" + k + "' is not an integer");
      }
      v += d;
      data_[k] = std::to_string(v);
      *mutated = true;
      put_i64(body, v);
      break;
    }
    case kCas: {
      std::string k = r.str(), expected = r.str(), desired = r.str();
      if (!r.ok) return fail("malformed compare_set");
      auto it = data_.find(k);
      if ((it == data_.end() && expected.empty()) || (it != data_.end() && it->second == expected)) {
        data_[k] = desired;
        *mutated = true;
        put_str(body, desired);
      } else {
        put_str(body, it == data_.end() ? std::string() : it->second);
      }
      break;
    }
    case kDel: {
      std::string k = r.str();
      if (!r.ok) return fail("malformed delete");
      body.push_back(data_.erase(k) > 0 ? '\1' : '\0');
      break;
    }
    case kWait:
    case kMissing: {
      uint32_t n = r.u32();
      std::vector<std::string> missing;
      for (uint32_t i = 0; i < n && r.ok; i++) {
        std::string k = r.str();
        if (data_.find(k) == data_.end()) missing.push_back(std::move(k));
      }
      if (!r.ok) return fail("malformed wait");
      if (cmd == kWait && !missing.empty()) return false;
      put_u32(body, static_cast<uint32_t>(missing.size()));
      for (auto& k : missing) put_str(body, k);
      break;
    }
    default:
      return fail("unknown store command " + std::to_string(cmd));
  }
  *reply = frame(body);
  return true;
}

// Answers complete requests buffered on one connection, in order, until one must wait.
void TcpStoreServer::serve(int fd, Conn& c) {
  bool mutated = false;
  for (;;) {
    std::string req;
    if (!c.parked.empty()) {
      req = c.parked;
    } else {
      if (c.in.size() < 4) break;
      uint32_t len;
      std::memcpy(&len, c.in.data(), 4);
      if (c.in.size() < 4 + static_cast<size_t>(len)) break;
      req = c.in.substr(4, len);
      c.in.erase(0, 4 + static_cast<size_t>(len));
    }
    std::string reply;
    if (!handle(req, &reply, &mutated)) {
      c.parked = std::move(req);
      break;
    }
    c.parked.clear();
    c.out += reply;
  }
  if (mutated) {
    // A set may release requests parked on other connections.
    for (auto& [ofd, oc] : conns_) {
      if (ofd != fd && !oc.parked.empty()) serve(ofd, oc);
    }
  }
}

void TcpStoreServer::run() {
  std::vector<pollfd> fds;
  while (!stopping_.load()) {
    fds.clear();
    fds.push_back({wake_fd_[0], POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& [fd, c] : conns_) {
      short ev = POLLIN;
      if (!c.out.empty()) ev |= POLLOUT;
      fds.push_back({fd, ev, 0});
    }
    int r = ::poll(fds.data(), fds.size(), 1000);
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    if (fds[0].revents) break;
    if (fds[1].revents & POLLIN) {
      for (;;) {
        int cfd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) break;
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conns_[cfd] = Conn{};
      }
    }
    for (size_t i = 2; i < fds.size(); i++) {
      int fd = fds[i].fd;
      auto it = conns_.find(fd);
      if (it == conns_.end()) continue;
      Conn& c = it->second;
      bool dead = false;
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[65536];
        for (;;) {
          ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
          if (n > 0) {
            c.in.append(buf, static_cast<size_t>(n));
            continue;
          }
          if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) dead = true;
          break;
        }
        if (!dead) serve(fd, c);
      }
      if (!dead && !c.out.empty()) {
        ssize_t n = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n > 0) c.out.erase(0, static_cast<size_t>(n));
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) dead = true;
      }
      if (dead) {
        // A client that gave up (timeout) or exited: its parked request goes with it.
        ::close(fd);
        conns_.erase(it);
      }
    }
  }
}

// ================================ client ================================

Status TcpStoreClient::connect(const std::string& host, int port, int64_t timeout_ms,
                               std::shared_ptr<TcpStoreClient>* out) {
  std::shared_ptr<TcpStoreClient> c(new TcpStoreClient(host, port));
  // One round trip proves the server is up (the call itself retries refused connections).
  std::string reply;
  std::string req(1, static_cast<char>(kMissing));
  put_u32(req, 0);
  X_RETURN_IF_ERROR(c->call("connect", req, timeout_ms, &reply));
  *out = std::move(c);
  return Status::Ok();
}

TcpStoreClient::~TcpStoreClient() {
  for (int fd : idle_) ::close(fd);
}

Status TcpStoreClient::call(const std::string& what, const std::string& req, int64_t timeout_ms,
                            std::string* reply) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string where = host_ + ":" + std::to_string(port_);
  auto timeout = [&] {
    Status s = Status::Error(Code::kTimeout, "store " + what + " timed out after " +
                                                 std::to_string(timeout_ms) + " ms (store at " + where + ")");
    s.operation = "store." + what;
    return s;
  };
  int fd = -1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      fd = idle_.back();
      idle_.pop_back();
    }
  }
  std::string last_error;
  while (fd < 0) {
    addrinfo* ai = nullptr;
    X_RETURN_IF_ERROR(resolve(host_, port_, false, &ai));
    int s = ::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int r = s < 0 ? -1 : ::connect(s, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (s >= 0 && r != 0 && errno == EINPROGRESS) {
      int w = wait_fd(s, POLLOUT, deadline);
      int err = 0;
      socklen_t len = sizeof(err);
      if (w == 1) getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
      r = (w == 1 && err == 0) ? 0 : -1;
      errno = w == 1 ? err : ETIMEDOUT;
    }
    if (r == 0) {
      int one = 1;
      setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      fd = s;
      break;
    }
    last_error = errno_text(errno);
    if (s >= 0) ::close(s);
    // Rank 0 may not be listening yet: retry until the deadline.
    if (remaining_ms(deadline) <= 0) {
      Status t = timeout();
      t.message += "; last connect error: " + last_error;
      return t;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(50, remaining_ms(deadline))));
  }
  bool timed_out = false;
  Status st = send_all(fd, frame(req), deadline, &timed_out);
  std::string len_bytes;
  if (st.ok()) st = recv_exact(fd, 4, &len_bytes, deadline, &timed_out);
  if (st.ok()) {
    uint32_t len;
    std::memcpy(&len, len_bytes.data(), 4);
    st = recv_exact(fd, len, reply, deadline, &timed_out);
  }
  if (!st.ok()) {
    // Closing the connection also drops a request parked on the server.
    ::close(fd);
    if (timed_out) return timeout();
    st.message = "store " + what + " failed (store at " + where + "): " + st.message;
    return st;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(fd);
  }
  if (reply->empty()) return comm_error("store " + what + ": empty reply");
  if ((*reply)[0] != '\0') {
    Reader r{*reply, 1};
    return comm_error("store " + what + " failed: " + r.str());
  }
  reply->erase(0, 1);
  return Status::Ok();
}

Status TcpStoreClient::set(const std::string& key, const std::string& value, int64_t timeout_ms) {
  std::string req(1, static_cast<char>(kSet)), reply;
  put_str(req, key);
  put_str(req, value);
  return call("set('" + key + "')", req, timeout_ms, &reply);
}

Status TcpStoreClient::get(const std::string& key, int64_t timeout_ms, std::string* value) {
  std::string req(1, static_cast<char>(kGet)), reply;
  put_str(req, key);
  X_RETURN_IF_ERROR(call("get('" + key + "')", req, timeout_ms, &reply));
  Reader r{reply};
  *value = r.str();
  return Status::Ok();
}

Status TcpStoreClient::add(const std::string& key, int64_t delta, int64_t timeout_ms, int64_t* result) {
  std::string req(1, static_cast<char>(kAdd)), reply;
  put_str(req, key);
  put_i64(req, delta);
  X_RETURN_IF_ERROR(call("add('" + key + "')", req, timeout_ms, &reply));
  Reader r{reply};
  *result = r.i64();
  return Status::Ok();
}

Status TcpStoreClient::compare_set(const std::string& key, const std::string& expected,
                                   const std::string& desired, int64_t timeout_ms, std::string* result) {
  std::string req(1, static_cast<char>(kCas)), reply;
  put_str(req, key);
  put_str(req, expected);
  put_str(req, desired);
  X_RETURN_IF_ERROR(call("compareSet('" + key + "')", req, timeout_ms, &reply));
  Reader r{reply};
  *result = r.str();
  return Status::Ok();
}

Status TcpStoreClient::remove(const std::string& key, int64_t timeout_ms, bool* existed) {
  std::string req(1, static_cast<char>(kDel)), reply;
  put_str(req, key);
  X_RETURN_IF_ERROR(call("delete('" + key + "')", req, timeout_ms, &reply));
  *existed = !reply.empty() && reply[0] == '\1';
  return Status::Ok();
}

Status TcpStoreClient::wait(const std::vector<std::string>& keys, int64_t timeout_ms,
                            std::vector<std::string>* missing) {
  std::string req(1, static_cast<char>(kWait)), reply;
  put_u32(req, static_cast<uint32_t>(keys.size()));
  for (auto& k : keys) put_str(req, k);
  Status st = call("wait", req, timeout_ms, &reply);
  if (st.code == Code::kTimeout && missing != nullptr) {
    // Ask (briefly) which keys never appeared, so the error can name the ranks that did not join.
    req[0] = static_cast<char>(kMissing);
    if (call("wait", req, 1000, &reply).ok()) {
      Reader r{reply};
      uint32_t n = r.u32();
      for (uint32_t i = 0; i < n && r.ok; i++) missing->push_back(r.str());
    }
  }
  return st;
}

}  // namespace x::comm
