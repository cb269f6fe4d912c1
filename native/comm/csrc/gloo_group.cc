#include "gloo_group.h"

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/tcp/pair.h>

#include <array>
#include <chrono>
#include <cstring>
#include <map>
#include <sstream>

namespace x::comm {
namespace {

using ms = std::chrono::milliseconds;

// Thrown by the store adapter inside gloo's rendezvous and caught in Group::connect.
struct StoreFailure : std::runtime_error {
  Status status;
  std::vector<std::string> missing;
  StoreFailure(Status s, std::vector<std::string> m)
      : std::runtime_error(s.message), status(std::move(s)), missing(std::move(m)) {}
};

// gloo's rendezvous talks to this; every key lands under the group's prefix.
class StoreAdapter : public gloo::rendezvous::Store {
 public:
  StoreAdapter(std::shared_ptr<KvStore> kv, std::string prefix, int64_t timeout_ms)
      : kv_(std::move(kv)), prefix_(std::move(prefix)), timeout_ms_(timeout_ms) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    Status st = kv_->set(prefix_ + key, std::string(data.begin(), data.end()), timeout_ms_);
    if (!st.ok()) throw StoreFailure(st, {});
  }
  std::vector<char> get(const std::string& key) override {
    std::string v;
    Status st = kv_->get(prefix_ + key, timeout_ms_, &v);
    if (!st.ok()) throw StoreFailure(st, {key});
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, ms(timeout_ms_)); }
  void wait(const std::vector<std::string>& keys, const ms& timeout) override {
    std::vector<std::string> full, missing;
    for (auto& k : keys) full.push_back(prefix_ + k);
    int64_t t = std::min<int64_t>(timeout.count() > 0 ? timeout.count() : timeout_ms_, timeout_ms_);
    Status st = kv_->wait(full, t, &missing);
    if (!st.ok()) {
      for (auto& m : missing) m = m.substr(prefix_.size());
      throw StoreFailure(st, missing.empty() ? keys : missing);
    }
  }

 private:
  std::shared_ptr<KvStore> kv_;
  std::string prefix_;
  int64_t timeout_ms_;
};

// One TCP device (one event-loop thread) per listening host, shared by the groups of a process.
// Leaked on purpose: objects with static storage duration are destroyed by exit() while other
// threads (a connect in flight) may still use them.
std::shared_ptr<gloo::transport::Device> device_for(const std::string& host) {
  struct Cache {
    std::mutex mu;
    std::map<std::string, std::weak_ptr<gloo::transport::Device>> devices;
  };
  static Cache* cache = new Cache();
  std::lock_guard<std::mutex> lock(cache->mu);
  if (auto d = cache->devices[host].lock()) return d;
  gloo::transport::tcp::attr attr;
  attr.hostname = host;
  auto d = gloo::transport::tcp::CreateDevice(attr);
  cache->devices[host] = d;
  return d;
}

// Fails every operation waiting on `ctx`'s connections at once with an IoException, as gloo does
// itself when a wait times out (tcp::Context::signalException). The entry point,
// tcp::Pair::signalExceptionExternal, is protected: a pointer to it is taken through a subclass.
struct PairAbort : gloo::transport::tcp::Pair {
  static void abort(gloo::transport::Pair* p, const std::string& why) {
    auto* pair = dynamic_cast<gloo::transport::tcp::Pair*>(p);
    if (pair == nullptr) return;
    std::exception_ptr (gloo::transport::tcp::Pair::*signal)(const std::string&) = &PairAbort::signalExceptionExternal;
    (pair->*signal)(why);
  }
};

void abort_connections(gloo::Context& ctx, const std::string& why) {
  // The pairs are fixed once the context is connected; each one takes its own lock.
  for (int i = 0; i < ctx.size; i++) {
    if (i == ctx.rank) continue;
    auto& pair = ctx.getPair(i);
    if (pair) PairAbort::abort(pair.get(), why);
  }
}

bool is_timeout(const std::string& what) {
  return what.find("Timed out") != std::string::npos || what.find("timed out") != std::string::npos;
}

constexpr uint32_t kMetaTag = 0x7fff0000u;  // fixed, so mismatched ranks still meet here
constexpr int kMetaWords = 6;

std::string describe_meta(const int64_t* m) {
  auto kind = static_cast<OpKind>(m[0]);
  std::ostringstream s;
  s << op_name(kind);
  if (kind != OpKind::kBarrier) s << " of " << m[2] << " " << dtype_name(static_cast<DType>(m[1])) << " elements";
  if (kind == OpKind::kAllReduce || kind == OpKind::kReduceScatter)
    s << " (" << reduce_name(static_cast<ReduceOp>(m[3])) << ")";
  if (kind == OpKind::kBroadcast) s << " from root " << m[3];
  return s.str();
}

}  // namespace

const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::kAllReduce: return "allReduce";
    case OpKind::kBroadcast: return "broadcast";
    case OpKind::kAllGather: return "allGather";
    case OpKind::kReduceScatter: return "reduceScatter";
    case OpKind::kSend: return "send";
    case OpKind::kRecv: return "recv";
    case OpKind::kBarrier: return "barrier";
    case OpKind::kExchange: return "exchange";
  }
  return "?";
}

Group::Group(std::shared_ptr<KvStore> store, std::string prefix, int rank, int size, int64_t timeout_ms,
             std::string host)
    : store_(std::move(store)),
      prefix_(std::move(prefix)),
      rank_(rank),
      size_(size),
      timeout_ms_(timeout_ms),
      host_(std::move(host)) {}

Group::~Group() { close(); }

void Group::close() {
  std::shared_ptr<gloo::Context> ctx, running;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (closed_) return;
    closed_ = true;
    ctx = std::move(context_);
    running = active_;
    if (broken_.empty()) broken_ = "the group was disposed";
  }
  // An operation in flight fails now (its waits throw) instead of running out its timeout: peers
  // see the connections close, as when a process dies.
  if (running) abort_connections(*running, "rank " + std::to_string(rank_) + ": the group was disposed");
  // `ctx` closes its connections here, or on the operation's thread when it lets go of `running`.
}

Status Group::fail(const std::string& op, const std::string& message, CommFailure* failure, bool timed_out,
                   int64_t timeout_ms) {
  if (timed_out) failure->timeout_ms = timeout_ms;
  Status st = Status::Error(timed_out ? Code::kTimeout : Code::kInternal, message);
  st.operation = op;
  std::lock_guard<std::mutex> lock(state_mu_);
  if (broken_.empty()) broken_ = message;
  return st;
}

Status Group::connect(CommFailure* failure) {
  std::lock_guard<std::mutex> op_lock(op_mu_);
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (closed_) {
      Status st = Status::Error(Code::kInternal,
                                "rank " + std::to_string(rank_) + ": the group was disposed before it connected");
      st.operation = "init";
      return st;
    }
  }
  try {
    auto dev = device_for(host_);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(rank_, size_);
    ctx->setTimeout(ms(timeout_ms_));
    StoreAdapter adapter(store_, prefix_, timeout_ms_);
    ctx->connectFullMesh(adapter, dev);
    std::lock_guard<std::mutex> lock(state_mu_);
    if (closed_) {
      Status st = Status::Error(Code::kInternal,
                                "rank " + std::to_string(rank_) + ": the group was disposed while it connected");
      st.operation = "init";
      return st;  // `ctx` closes its connections on the way out
    }
    context_ = ctx;
    return Status::Ok();
  } catch (const StoreFailure& e) {
    std::string msg = "rank " + std::to_string(rank_) + ": init of a group of " + std::to_string(size_) + " ";
    if (e.status.code == Code::kTimeout) {
      std::string who;
      for (auto& k : e.missing) {
        who += who.empty() ? k : ", " + k;
        if (failure->peer < 0) {
          try {
            failure->peer = std::stoi(k);
          } catch (...) {
          }
        }
      }
      msg += "timed out after " + std::to_string(timeout_ms_) + " ms: rank(s) " + (who.empty() ? "?" : who) +
             " did not join (" + e.status.message + ")";
      return fail("init", msg, failure, true, timeout_ms_);
    }
    return fail("init", msg + "failed: " + e.status.message, failure, false, timeout_ms_);
  } catch (const std::exception& e) {
    std::string what = e.what();
    return fail("init", "rank " + std::to_string(rank_) + ": init failed: " + what, failure, is_timeout(what),
                timeout_ms_);
  } catch (...) {
    return fail("init", "rank " + std::to_string(rank_) + ": init failed with an unknown exception", failure,
                false, timeout_ms_);
  }
}

Status Group::run(const OpDesc& op, CommFailure* failure) {
  std::lock_guard<std::mutex> op_lock(op_mu_);
  const char* name = op_name(op.kind);
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (!broken_.empty() || !context_) {
      Status st = Status::Error(Code::kInternal, "rank " + std::to_string(rank_) + ": " + name +
                                                     " on a group that is unusable after an earlier failure: " +
                                                     (broken_.empty() ? "not connected" : broken_));
      st.operation = name;
      return st;
    }
    active_ = context_;
  }
  std::shared_ptr<gloo::Context> ctx = active_;  // this thread's reference while the op runs
  int64_t t = op.timeout_ms > 0 ? op.timeout_ms : timeout_ms_;
  Status st;
  try {
    st = run_locked(op, t, failure);
  } catch (const std::exception& e) {
    std::string what = e.what();
    // gloo reports a dead peer as an IoException from the pair ("Connection closed by peer",
    // "Connection reset by peer") and an expired wait as "Timed out ...".
    std::string peer = failure->peer >= 0 ? " with peer " + std::to_string(failure->peer) : "";
    st = fail(name, "rank " + std::to_string(rank_) + ": " + name + peer + " failed: " + what, failure,
              is_timeout(what), t);
  } catch (...) {
    st = fail(name, "rank " + std::to_string(rank_) + ": " + name + " failed with an unknown exception", failure,
              false, t);
  }
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    active_.reset();
  }
  // After a close() in the meantime `ctx` is the last reference: the connections close here.
  return st;
}

Status Group::check_metadata(const OpDesc& op, int64_t t, CommFailure* failure) {
  int64_t mine[kMetaWords] = {static_cast<int64_t>(op.kind), static_cast<int64_t>(op.dtype),
                              static_cast<int64_t>(op.count), 0, static_cast<int64_t>(seq_), 0x78636f6d6d};
  if (op.kind == OpKind::kAllReduce || op.kind == OpKind::kReduceScatter) mine[3] = static_cast<int64_t>(op.reduce);
  if (op.kind == OpKind::kBroadcast) mine[3] = op.root;
  if (op.kind == OpKind::kBarrier) mine[1] = mine[2] = 0;
  std::vector<int64_t> all(static_cast<size_t>(kMetaWords) * size_);
  gloo::AllgatherOptions o(active_);
  o.setInput(mine, kMetaWords);
  o.setOutput(all.data(), all.size());
  o.setTag(kMetaTag);
  o.setTimeout(ms(t));
  gloo::allgather(o);
  for (int r = 0; r < size_; r++) {
    const int64_t* theirs = all.data() + static_cast<size_t>(r) * kMetaWords;
    if (std::memcmp(theirs, mine, 4 * sizeof(int64_t)) != 0 || theirs[5] != mine[5]) {
      failure->peer = r;
      std::string msg = "rank " + std::to_string(rank_) + ": " + op_name(op.kind) + " mismatch: rank " +
                        std::to_string(rank_) + " called " + describe_meta(mine) + ", rank " + std::to_string(r) +
                        " called " + describe_meta(theirs);
      // Every rank sees the same table, so every rank fails here; the connections stay usable.
      Status st = Status::Error(Code::kInternal, msg);
      st.operation = op_name(op.kind);
      return st;
    }
  }
  return Status::Ok();
}

Status Group::run_locked(const OpDesc& op, int64_t t, CommFailure* failure) {
  const size_t esize = dtype_size(op.dtype);
  const size_t bytes = op.count * esize;
  if (op.kind == OpKind::kSend || op.kind == OpKind::kRecv) {
    P2P item{op.kind == OpKind::kSend, op.in, op.count, op.dtype, op.root, op.tag};
    return p2p({item}, t, op_name(op.kind), failure);
  }
  if (op.kind == OpKind::kExchange) return p2p(op.items, t, "exchange", failure);

  X_RETURN_IF_ERROR(check_metadata(op, t, failure));
  seq_++;
  const uint32_t tag = seq_ & 0x3fffffffu;
  switch (op.kind) {
    case OpKind::kBarrier: {
      gloo::BarrierOptions o(active_);
      o.setTag(tag);
      o.setTimeout(ms(t));
      gloo::barrier(o);
      return Status::Ok();
    }
    case OpKind::kAllReduce:
    case OpKind::kReduceScatter: {
      if (op.count == 0 || size_ == 1) {
        if (op.kind == OpKind::kReduceScatter && bytes > 0) std::memcpy(op.out, op.in, bytes);
        return Status::Ok();
      }
      // reduceScatter = all-reduce of a scratch copy, then this rank's chunk (gloo 0.5 has no
      // options-based reduce-scatter; CPU groups carry control-plane sizes).
      std::vector<char> scratch;
      void* buf = op.in;
      size_t n = op.count;
      if (op.kind == OpKind::kReduceScatter) {
        n = op.count * size_;
        scratch.assign(static_cast<char*>(op.in), static_cast<char*>(op.in) + n * esize);
        buf = scratch.data();
      }
      // The reduction sees elements of the real dtype; gloo only needs their width to split the
      // buffer, so an unsigned type of the same size stands in (f16/bf16 included).
      gloo::AllreduceOptions typed(active_);
      switch (esize) {
        case 1: typed.setOutput(static_cast<uint8_t*>(buf), n); break;
        case 2: typed.setOutput(static_cast<uint16_t*>(buf), n); break;
        case 4: typed.setOutput(static_cast<uint32_t*>(buf), n); break;
        default: typed.setOutput(static_cast<uint64_t*>(buf), n); break;
      }
      typed.setReduceFunction(reduce_fn(op.dtype, op.reduce));
      typed.setTag(tag);
      typed.setTimeout(ms(t));
      gloo::allreduce(typed);
      if (op.kind == OpKind::kReduceScatter)
        std::memcpy(op.out, scratch.data() + static_cast<size_t>(rank_) * bytes, bytes);
      return Status::Ok();
    }
    case OpKind::kBroadcast: {
      if (op.count == 0 || size_ == 1) return Status::Ok();
      if (op.root < 0 || op.root >= size_) return Status::Invalid("broadcast root out of range");
      gloo::BroadcastOptions o(active_);
      o.setOutput(static_cast<uint8_t*>(op.in), bytes);
      o.setRoot(op.root);
      o.setTag(tag);
      o.setTimeout(ms(t));
      gloo::broadcast(o);
      return Status::Ok();
    }
    case OpKind::kAllGather: {
      if (op.count == 0) return Status::Ok();
      if (size_ == 1) {
        std::memmove(op.out, op.in, bytes);
        return Status::Ok();
      }
      gloo::AllgatherOptions o(active_);
      o.setInput(static_cast<uint8_t*>(op.in), bytes);
      o.setOutput(static_cast<uint8_t*>(op.out), bytes * size_);
      o.setTag(tag);
      o.setTimeout(ms(t));
      gloo::allgather(o);
      return Status::Ok();
    }
    default:
      return Status::Invalid("unknown operation");
  }
}

// Point-to-point with a handshake: the sender announces (count, dtype), the receiver answers
// whether it expected exactly that, and only then the payload moves. A mismatch fails on both
// sides, naming both sizes, instead of a receiver timing out on bytes that never fit.
Status Group::p2p(const std::vector<P2P>& items, int64_t t, const char* name, CommFailure* failure) {
  for (auto& it : items) {
    if (it.peer < 0 || it.peer >= size_ || it.peer == rank_) {
      return Status::Invalid(std::string("Expected a peer rank in [0, ") + std::to_string(size_) +
                             ") other than " + std::to_string(rank_) + " for " + name + " but received " +
                             std::to_string(it.peer));
    }
  }
  auto slot = [](uint32_t tag, uint64_t phase) { return (static_cast<uint64_t>(tag) << 8) | phase; };
  const size_t n = items.size();
  std::vector<std::array<int64_t, 2>> hdr(n), ack(n);
  std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> bufs(n);
  auto describe = [](int64_t count, int64_t dt) {
    return std::to_string(count) + " " + dtype_name(static_cast<DType>(dt)) + " elements";
  };
  // Phase 1: headers (sender -> receiver).
  for (size_t i = 0; i < n; i++) {
    hdr[i] = {static_cast<int64_t>(items[i].count), static_cast<int64_t>(items[i].dtype)};
    bufs[i] = active_->createUnboundBuffer(hdr[i].data(), sizeof(hdr[i]));
    failure->peer = items[i].peer;
    if (items[i].send) bufs[i]->send(items[i].peer, slot(items[i].tag, 1));
    else bufs[i]->recv(items[i].peer, slot(items[i].tag, 1));
  }
  for (size_t i = 0; i < n; i++) {
    failure->peer = items[i].peer;
    if (items[i].send) bufs[i]->waitSend(ms(t));
    else bufs[i]->waitRecv(ms(t));
  }
  // Phase 2: acknowledgements (receiver -> sender) carrying what the receiver expected.
  for (size_t i = 0; i < n; i++) {
    if (!items[i].send) {
      ack[i] = {static_cast<int64_t>(items[i].count), static_cast<int64_t>(items[i].dtype)};
    }
    bufs[i] = active_->createUnboundBuffer(ack[i].data(), sizeof(ack[i]));
    if (items[i].send) bufs[i]->recv(items[i].peer, slot(items[i].tag, 2));
    else bufs[i]->send(items[i].peer, slot(items[i].tag, 2));
  }
  for (size_t i = 0; i < n; i++) {
    failure->peer = items[i].peer;
    if (items[i].send) bufs[i]->waitRecv(ms(t));
    else bufs[i]->waitSend(ms(t));
  }
  for (size_t i = 0; i < n; i++) {
    // Sender: hdr = mine, ack = the receiver's expectation. Receiver: hdr = the sender's, ack = mine.
    if (hdr[i] != ack[i]) {
      failure->peer = items[i].peer;
      const auto& sent = hdr[i];
      std::string msg = "rank " + std::to_string(rank_) + ": " + name + " size mismatch with peer " +
                        std::to_string(items[i].peer) + ": the sender (rank " +
                        std::to_string(items[i].send ? rank_ : items[i].peer) + ") sends " +
                        describe(sent[0], sent[1]) + ", the receiver (rank " +
                        std::to_string(items[i].send ? items[i].peer : rank_) + ") expects " +
                        describe(ack[i][0], ack[i][1]);
      // Both sides saw the same pair of headers and stop here; the connections stay usable.
      Status st = Status::Error(Code::kInternal, msg);
      st.operation = name;
      return st;
    }
  }
  // Phase 3: payloads.
  std::vector<bool> posted(n, false);
  for (size_t i = 0; i < n; i++) {
    size_t bytes = items[i].count * dtype_size(items[i].dtype);
    if (bytes == 0) continue;
    bufs[i] = active_->createUnboundBuffer(items[i].ptr, bytes);
    if (items[i].send) bufs[i]->send(items[i].peer, slot(items[i].tag, 3));
    else bufs[i]->recv(items[i].peer, slot(items[i].tag, 3));
    posted[i] = true;
  }
  for (size_t i = 0; i < n; i++) {
    if (!posted[i]) continue;
    failure->peer = items[i].peer;
    if (items[i].send) bufs[i]->waitSend(ms(t));
    else bufs[i]->waitRecv(ms(t));
  }
  failure->peer = -1;
  return Status::Ok();
}

}  // namespace x::comm
