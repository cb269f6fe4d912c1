#include "nccl_group.h"

#include <algorithm>

#include "nccl_exit.h"

namespace x::comm {
namespace {

using Clock = std::chrono::steady_clock;
using nccl::ncclResult_t;

nccl::ncclDataType_t nccl_dtype(DType t) {
  switch (t) {
    case DType::kF32: return nccl::ncclFloat32;
    case DType::kF64: return nccl::ncclFloat64;
    case DType::kI32: return nccl::ncclInt32;
    case DType::kI64: return nccl::ncclInt64;
    case DType::kU8: return nccl::ncclUint8;
    case DType::kF16: return nccl::ncclFloat16;
    case DType::kBF16: return nccl::ncclBfloat16;
  }
  return nccl::ncclUint8;
}

nccl::ncclRedOp_t nccl_reduce(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return nccl::ncclSum;
    case ReduceOp::kMin: return nccl::ncclMin;
    case ReduceOp::kMax: return nccl::ncclMax;
    case ReduceOp::kProd: return nccl::ncclProd;
  }
  return nccl::ncclSum;
}

bool is_p2p(OpKind k) { return k == OpKind::kSend || k == OpKind::kRecv || k == OpKind::kExchange; }

std::vector<P2P> p2p_items(const OpDesc& op) {
  if (op.kind == OpKind::kExchange) return op.items;
  return {P2P{op.kind == OpKind::kSend, op.in, op.count, op.dtype, op.root, 0}};
}

int64_t remaining_ms(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return std::max<int64_t>(ms, 1);
}

}  // namespace

NcclGroup::NcclGroup(std::shared_ptr<KvStore> store, std::string prefix, int rank, int size, int device,
                     int64_t timeout_ms)
    : store_(std::move(store)),
      prefix_(std::move(prefix)),
      rank_(rank),
      size_(size),
      device_(device),
      timeout_ms_(timeout_ms) {}

NcclGroup::~NcclGroup() {
  close();
  // Only after begin_exit() can the watchdog still be running here (wait_quiet() ran out): the
  // process is ending, and a joinable thread must not terminate it.
  if (watchdog_.joinable()) watchdog_.detach();
}

Status NcclGroup::error(const std::string& op, const std::string& message, CommFailure* failure,
                        int64_t timeout_ms) const {
  Status st = Status::Error(timeout_ms >= 0 ? Code::kTimeout : Code::kInternal,
                            "rank " + std::to_string(rank_) + ": " + message);
  st.operation = op;
  if (failure != nullptr && timeout_ms >= 0) failure->timeout_ms = timeout_ms;
  return st;
}

Status NcclGroup::enter() { return cuda_status(cu_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent"); }

Status NcclGroup::connect(CommFailure* failure) {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (stop_) return error("init", "the group was disposed before it connected", failure);
    connecting_ = true;
  }
  watch_for_exit(weak_from_this());
  Status st = connect_impl(failure);
  if (!st.ok() && st.code != Code::kNoDevice && st.operation != "init") {
    st = error("init", "NCCL group init failed: " + st.message, failure);  // a CUDA call failed
  }
  bool exiting = false;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    exiting = exiting_;
    if (st.ok() && stop_) st = error("init", "the group was disposed while it connected", failure);
    if (st.ok()) {
      // Started under the lock, so a close() that follows always finds the thread to join.
      connecting_ = false;
      watchdog_running_ = true;
      watchdog_ = std::thread([this] { watchdog(); });
      return st;
    }
  }
  // Nobody will use the communicator: release it here (the caller may have given up waiting).
  // Still marked connecting meanwhile: a close() leaves it to this thread, and the exit handler
  // waits for it. At process exit the handler takes the communicator (take_comm) and aborts it.
  if (!exiting) teardown();
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    connecting_ = false;
  }
  quiet_cv_.notify_all();
  return st;
}

Status NcclGroup::connect_impl(CommFailure* failure) {
  const nccl::Load& nl = nccl::load();
  if (nl.api == nullptr) return Status::Error(Code::kNoDevice, "NCCL is unavailable: " + nl.why);
  const cuda::DriverLoad& dl = cuda::load_driver();
  if (dl.driver == nullptr) return Status::Error(Code::kNoDevice, "CUDA is unavailable: " + dl.why);
  nccl_ = nl.api;
  cu_ = dl.driver;
  int count = 0;
  X_CUDA_CHECK(cu_->cuDeviceGetCount(&count));
  if (device_ < 0 || device_ >= count) {
    return Status::Error(Code::kNoDevice, "cuda:" + std::to_string(device_) + " does not exist (this machine has " +
                                              std::to_string(count) + " CUDA device(s))");
  }
  cuda::CUdevice dev = 0;
  X_CUDA_CHECK(cu_->cuDeviceGet(&dev, device_));
  X_CUDA_CHECK(cu_->cuDevicePrimaryCtxRetain(&ctx_, dev));
  X_RETURN_IF_ERROR(enter());
  X_CUDA_CHECK(cu_->cuMemAlloc(&scratch_, 256));

  nccl::ncclUniqueId id{};
  X_RETURN_IF_ERROR(rendezvous(&id, failure));
  nccl::ncclConfig_v21700 config;
  config.blocking = 1;  // enqueue calls return with the kernel on the caller's stream
  nccl::ncclComm_t comm = nullptr;
  ncclResult_t r = nccl_->ncclCommInitRankConfig(&comm, size_, id, rank_, &config);
  // NCCL has initialized the CUDA runtime inside it (whose exit handler tears it down): the exit
  // handler registered now runs before that one.
  install_exit_handler();
  if (r != nccl::ncclSuccess) {
    if (comm != nullptr) nccl_->ncclCommAbort(comm);
    return error("init", nccl::describe(r, "ncclCommInitRankConfig", comm) + " (cuda:" +
                             std::to_string(device_) + ", group of " + std::to_string(size_) + ")",
                 failure);
  }
  {
    std::lock_guard<std::mutex> lock(op_mu_);
    comm_ = comm;
  }
  return warm_up(failure);
}

// Every rank checks in under the group's prefix; rank 0 publishes the unique id first, so once
// everyone has checked in the id is there. A rank that never comes is named after the timeout.
Status NcclGroup::rendezvous(nccl::ncclUniqueId* id, CommFailure* failure) {
  const std::string id_key = prefix_ + "nccl/id";
  if (rank_ == 0) {
    ncclResult_t r = nccl_->ncclGetUniqueId(id);
    if (r != nccl::ncclSuccess) return error("init", nccl::describe(r, "ncclGetUniqueId", nullptr), failure);
    Status st = store_->set(id_key, std::string(id->internal, nccl::kUniqueIdBytes), timeout_ms_);
    if (!st.ok()) return error("init", "publishing the NCCL unique id failed: " + st.message, failure);
  }
  Status st = store_->set(prefix_ + "nccl/joined/" + std::to_string(rank_), "1", timeout_ms_);
  if (!st.ok()) return error("init", "checking in failed: " + st.message, failure);
  std::vector<std::string> keys, missing;
  for (int r = 0; r < size_; r++) keys.push_back(prefix_ + "nccl/joined/" + std::to_string(r));
  st = store_->wait(keys, timeout_ms_, &missing);
  if (!st.ok()) {
    if (st.code != Code::kTimeout) return error("init", "rendezvous failed: " + st.message, failure);
    std::string who;
    for (auto& k : missing) {
      std::string r = k.substr(k.rfind('/') + 1);
      who += who.empty() ? r : ", " + r;
      if (failure->peer < 0) failure->peer = std::stoi(r);
    }
    return error("init",
                 "init of an NCCL group of " + std::to_string(size_) + " timed out after " +
                     std::to_string(timeout_ms_) + " ms: rank(s) " + (who.empty() ? "?" : who) + " did not join",
                 failure, timeout_ms_);
  }
  if (rank_ != 0) {
    std::string v;
    st = store_->get(id_key, timeout_ms_, &v);
    if (!st.ok() || v.size() != nccl::kUniqueIdBytes) {
      failure->peer = 0;
      return error("init", "reading rank 0's NCCL unique id failed: " + (st.ok() ? "wrong size" : st.message),
                   failure);
    }
    std::copy(v.begin(), v.end(), id->internal);
  }
  return Status::Ok();
}

// A one-byte all-reduce on a private stream proves the communicator works before anyone uses it.
Status NcclGroup::warm_up(CommFailure* failure) {
  cuda::CUstream s = nullptr;
  X_CUDA_CHECK(cu_->cuStreamCreate(&s, cuda::CU_STREAM_NON_BLOCKING));
  Status st;
  std::lock_guard<std::mutex> lock(op_mu_);
  ncclResult_t r = nccl_->ncclAllReduce(reinterpret_cast<void*>(scratch_), reinterpret_cast<void*>(scratch_), 1,
                                        nccl::ncclUint8, nccl::ncclSum, comm_, reinterpret_cast<nccl::cudaStream_t>(s));
  if (r != nccl::ncclSuccess) st = error("init", nccl::describe(r, "ncclAllReduce (warm-up)", comm_), failure);
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
  while (st.ok()) {
    cuda::CUresult q = cu_->cuStreamQuery(s);
    if (q == cuda::CUDA_SUCCESS) break;
    if (q != cuda::CUDA_ERROR_NOT_READY) {
      st = cuda_status(q, "cuStreamQuery (warm-up)");
    } else if (Clock::now() > deadline) {
      st = error("init", "the warm-up all-reduce did not complete within " + std::to_string(timeout_ms_) + " ms",
                 failure, timeout_ms_);
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  if (!st.ok()) {
    nccl_->ncclCommAbort(comm_);  // no watchdog yet: this thread is the only user
    comm_ = nullptr;
  }
  cu_->cuStreamDestroy(s);
  return st;
}

// The first send/recv between two ranks (per direction) connects them inside NCCL, which waits
// for the peer without a bound. Both sides check in through the store first, within the timeout.
Status NcclGroup::handshake(const std::vector<P2P>& items, const char* name, CommFailure* failure) {
  std::vector<const P2P*> todo;
  for (auto& it : items) {
    auto pair = it.send ? std::make_pair(rank_, it.peer) : std::make_pair(it.peer, rank_);
    if (connected_.count(pair) == 0) todo.push_back(&it);
  }
  if (todo.empty()) return Status::Ok();
  auto key = [&](const P2P& it, bool sender) {
    int s = it.send ? rank_ : it.peer, r = it.send ? it.peer : rank_;
    return prefix_ + "p2p/" + std::to_string(s) + "-" + std::to_string(r) + (sender ? "/s" : "/r");
  };
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
  for (auto* it : todo) {
    Status st = store_->set(key(*it, it->send), "1", timeout_ms_);
    if (!st.ok()) return error(name, std::string("p2p handshake failed: ") + st.message, failure);
  }
  for (auto* it : todo) {
    std::string v;
    Status st = store_->get(key(*it, !it->send), remaining_ms(deadline), &v);
    if (!st.ok()) {
      failure->peer = it->peer;
      if (st.code != Code::kTimeout) return error(name, "p2p handshake failed: " + st.message, failure);
      std::string mine = it->send ? "send to" : "recv from", theirs = it->send ? "recv" : "send";
      return error(name,
                   "first " + mine + " peer " + std::to_string(it->peer) + ": rank " + std::to_string(it->peer) +
                       " did not reach its matching " + theirs + " within " + std::to_string(timeout_ms_) +
                       " ms (the first send/recv between two ranks connects them)",
                   failure, timeout_ms_);
    }
  }
  for (auto* it : todo) connected_.insert(it->send ? std::make_pair(rank_, it->peer) : std::make_pair(it->peer, rank_));
  return Status::Ok();
}

nccl::ncclResult_t NcclGroup::launch(const OpDesc& op, cuda::CUstream stream, const char** call) {
  auto s = reinterpret_cast<nccl::cudaStream_t>(stream);
  auto dt = nccl_dtype(op.dtype);
  auto red = nccl_reduce(op.reduce);
  ncclResult_t r = nccl::ncclSuccess;
  switch (op.kind) {
    case OpKind::kAllReduce:
      *call = "ncclAllReduce";
      r = nccl_->ncclAllReduce(op.in, op.in, op.count, dt, red, comm_, s);
      break;
    case OpKind::kBroadcast:
      *call = "ncclBroadcast";
      r = nccl_->ncclBroadcast(op.in, op.in, op.count, dt, op.root, comm_, s);
      break;
    case OpKind::kAllGather:
      *call = "ncclAllGather";
      r = nccl_->ncclAllGather(op.in, op.out, op.count, dt, comm_, s);
      break;
    case OpKind::kReduceScatter:
      *call = "ncclReduceScatter";
      r = nccl_->ncclReduceScatter(op.in, op.out, op.count, dt, red, comm_, s);
      break;
    case OpKind::kBarrier:
      *call = "ncclAllReduce (barrier)";
      r = nccl_->ncclAllReduce(reinterpret_cast<void*>(scratch_), reinterpret_cast<void*>(scratch_), 1,
                               nccl::ncclUint8, nccl::ncclSum, comm_, s);
      break;
    case OpKind::kSend:
    case OpKind::kRecv:
    case OpKind::kExchange: {
      // One group: NCCL posts every send and receive before any of them waits.
      *call = op.kind == OpKind::kExchange ? "ncclGroupEnd (exchange)" : op.kind == OpKind::kSend ? "ncclSend" : "ncclRecv";
      r = nccl_->ncclGroupStart();
      if (r != nccl::ncclSuccess) break;
      for (auto& it : p2p_items(op)) {
        ncclResult_t e = it.send ? nccl_->ncclSend(it.ptr, it.count, nccl_dtype(it.dtype), it.peer, comm_, s)
                                 : nccl_->ncclRecv(it.ptr, it.count, nccl_dtype(it.dtype), it.peer, comm_, s);
        if (e != nccl::ncclSuccess && r == nccl::ncclSuccess) r = e;
      }
      ncclResult_t end = nccl_->ncclGroupEnd();  // always closes the group, even after an error
      if (r == nccl::ncclSuccess) r = end;
      break;
    }
  }
  return r;
}

Status NcclGroup::enqueue(const OpDesc& op, cuda::CUstream stream, CommFailure* failure) {
  const char* name = op_name(op.kind);
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (!failed_.ok()) {
      return error(name, std::string(name) + " on an NCCL group that is unusable after an earlier failure: " +
                             failed_.message, nullptr);
    }
  }
  std::lock_guard<std::mutex> lock(op_mu_);
  if (comm_ == nullptr) return error(name, std::string(name) + " on an NCCL group that was closed", failure);
  Status entered = enter();
  if (!entered.ok()) return error(name, entered.message, failure);
  if (is_p2p(op.kind)) X_RETURN_IF_ERROR(handshake(p2p_items(op), name, failure));
  const char* call = name;
  ncclResult_t r = launch(op, stream, &call);
  if (r != nccl::ncclSuccess) {
    Status st = error(name, nccl::describe(r, call, comm_), failure);
    if (op.kind == OpKind::kSend || op.kind == OpKind::kRecv) failure->peer = op.root;
    // Argument and usage errors are the caller's and leave the communicator intact.
    if (r == nccl::ncclInvalidArgument || r == nccl::ncclInvalidUsage) return st;
    fail(st, *failure);
    return st;
  }
  // Captured into a CUDA graph: the operation runs at each launch of the graph, which the
  // watchdog cannot see (an event recorded during capture cannot be queried).
  int capture = cuda::CU_STREAM_CAPTURE_STATUS_NONE;
  if (cu_->cuStreamIsCapturing != nullptr && cu_->cuStreamIsCapturing(stream, &capture) == cuda::CUDA_SUCCESS &&
      capture != cuda::CU_STREAM_CAPTURE_STATUS_NONE) {
    return Status::Ok();
  }
  cuda::CUevent ev = nullptr;
  {
    std::lock_guard<std::mutex> state(state_mu_);
    if (!free_events_.empty()) {
      ev = free_events_.back();
      free_events_.pop_back();
    }
  }
  Status st = ev == nullptr ? cuda_status(cu_->cuEventCreate(&ev, cuda::CU_EVENT_DISABLE_TIMING), "cuEventCreate")
                            : Status::Ok();
  if (st.ok()) st = cuda_status(cu_->cuEventRecord(ev, stream), "cuEventRecord");
  if (!st.ok()) {
    // The operation is on the stream but cannot be watched: the group cannot keep its promise.
    st = error(name, std::string(name) + " was enqueued but cannot be watched: " + st.message, failure);
    if (ev != nullptr) cu_->cuEventDestroy(ev);
    fail(st, *failure);
    return st;
  }
  {
    std::lock_guard<std::mutex> state(state_mu_);
    int peer = op.kind == OpKind::kSend || op.kind == OpKind::kRecv ? op.root : -1;
    pending_.push_back({next_seq_++, op.kind, peer, ev, Clock::now() + std::chrono::milliseconds(timeout_ms_)});
  }
  cv_.notify_all();
  return Status::Ok();
}

void NcclGroup::fail(Status st, CommFailure f) {
  std::vector<Waiter> settle;
  Status first;
  CommFailure detail;
  {
    std::lock_guard<std::mutex> state(state_mu_);
    fail_locked(std::move(st), f, &settle);
    first = failed_;
    detail = failed_detail_;
  }
  cv_.notify_all();
  for (auto& w : settle) w.done(first, detail);
}

void NcclGroup::wait(Done done) {
  std::unique_lock<std::mutex> lock(state_mu_);
  if (!failed_.ok()) {
    Status st = failed_;
    CommFailure f = failed_detail_;
    lock.unlock();
    return done(st, f);
  }
  uint64_t target = next_seq_ - 1;
  bool pending = std::any_of(pending_.begin(), pending_.end(), [&](const Pending& p) { return p.seq <= target; });
  if (!pending) {
    lock.unlock();
    return done(Status::Ok(), {});
  }
  waiters_.push_back({target, std::move(done)});
  cv_.notify_all();
}

Status NcclGroup::failure(CommFailure* out) {
  std::lock_guard<std::mutex> lock(state_mu_);
  *out = failed_detail_;
  return failed_;
}

void NcclGroup::fail_locked(Status st, CommFailure f, std::vector<Waiter>* settle) {
  if (failed_.ok()) {
    failed_ = std::move(st);
    failed_detail_ = f;
    abort_requested_ = true;
  }
  for (auto& p : pending_) free_events_.push_back(p.event);  // destroyed at close; reusable is fine too
  pending_.clear();
  for (auto& w : waiters_) settle->push_back(std::move(w));
  waiters_.clear();
}

void NcclGroup::settle_done_locked(std::vector<Waiter>* settle) {
  uint64_t oldest = next_seq_;
  for (auto& p : pending_) oldest = std::min(oldest, p.seq);
  auto it = std::partition(waiters_.begin(), waiters_.end(), [&](const Waiter& w) { return w.seq >= oldest; });
  for (auto w = it; w != waiters_.end(); ++w) settle->push_back(std::move(*w));
  waiters_.erase(it, waiters_.end());
}

void NcclGroup::close() {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (exiting_) return;  // the process exit handler owns what is left
    stop_ = true;
    if (connecting_) return;  // connect() sees stop_ and tears down when it returns
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  teardown();
}

// Releases everything the group holds. Idempotent; the watchdog is not running.
void NcclGroup::teardown() {
  nccl::ncclComm_t comm = nullptr;
  {
    std::lock_guard<std::mutex> lock(op_mu_);
    std::swap(comm, comm_);
  }
  std::vector<Waiter> settle;
  std::vector<cuda::CUevent> events;
  bool clean = true;
  Status st;
  CommFailure detail;
  const bool entered = ctx_ != nullptr && enter().ok();
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    for (auto& p : pending_) {
      if (!entered || cu_->cuEventQuery(p.event) != cuda::CUDA_SUCCESS) clean = false;
      events.push_back(p.event);
    }
    pending_.clear();
    clean = clean && failed_.ok();
    st = failed_.ok() ? error("dispose", "the NCCL group was disposed", nullptr) : failed_;
    detail = failed_detail_;
    events.insert(events.end(), free_events_.begin(), free_events_.end());
    free_events_.clear();
    settle.swap(waiters_);
  }
  for (auto& w : settle) w.done(st, detail);
  if (ctx_ == nullptr) return;
  if (entered) {
    // Destroy is local once nothing is pending; otherwise abort, so closing never waits for peers.
    if (comm != nullptr) clean ? nccl_->ncclCommDestroy(comm) : nccl_->ncclCommAbort(comm);
    for (auto e : events) cu_->cuEventDestroy(e);
    if (scratch_ != 0) cu_->cuMemFree(scratch_);
  }
  scratch_ = 0;
  cuda::CUdevice dev = 0;
  if (cu_->cuDeviceGet(&dev, device_) == cuda::CUDA_SUCCESS) cu_->cuDevicePrimaryCtxRelease(dev);
  ctx_ = nullptr;
}

bool NcclGroup::live() {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (connecting_ || watchdog_running_) return true;
  }
  std::lock_guard<std::mutex> lock(op_mu_);
  return comm_ != nullptr;
}

void NcclGroup::begin_exit() {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    exiting_ = true;
    stop_ = true;
    waiters_.clear();  // no JS runs any more: nobody to settle
  }
  cv_.notify_all();
}

bool NcclGroup::wait_quiet(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(state_mu_);
  if (!quiet_cv_.wait_until(lock, deadline, [&] { return !watchdog_running_ && !connecting_; })) return false;
  lock.unlock();
  if (watchdog_.joinable()) watchdog_.join();  // it has returned: immediate
  return true;
}

nccl::ncclComm_t NcclGroup::take_comm() {
  nccl::ncclComm_t comm = nullptr;
  std::lock_guard<std::mutex> lock(op_mu_);
  std::swap(comm, comm_);
  return comm;
}

}  // namespace x::comm
