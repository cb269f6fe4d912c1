// CPU streams: an in-order queue per stream, run by the stream's own native thread.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "registry.h"
#include "stream.h"

namespace x {
namespace {

using Clock = std::chrono::steady_clock;

// Sleeps up to `ns`, waking early when the stream is stopped.
void interruptible_sleep(uint64_t ns, const std::atomic<bool>& stop) {
  auto end = Clock::now() + std::chrono::nanoseconds(ns);
  while (!stop.load(std::memory_order_relaxed)) {
    auto now = Clock::now();
    if (now >= end) return;
    std::this_thread::sleep_for(std::min<Clock::duration>(end - now, std::chrono::milliseconds(20)));
  }
}

class CpuEvent final : public Event, public std::enable_shared_from_this<CpuEvent> {
 public:
  CpuEvent() : Event(X_DEVICE_CPU) {}

  // Returns the generation a new record will complete.
  uint64_t next_generation() {
    std::lock_guard<std::mutex> lock(mu_);
    return ++recorded_;
  }
  uint64_t recorded() {
    std::lock_guard<std::mutex> lock(mu_);
    return recorded_;
  }
  void complete(uint64_t gen, const Status& st) {
    std::vector<Waiter> ready;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (gen > completed_) {
        completed_ = gen;
        last_status_ = st;
      }
      for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (it->first <= completed_) {
          ready.push_back(std::move(it->second));
          it = waiters_.erase(it);
        } else {
          ++it;
        }
      }
    }
    cv_.notify_all();
    for (auto& w : ready) w(st);
  }
  // Blocks until generation `gen` completed; false if the waiting stream is stopped meanwhile.
  bool wait_generation(uint64_t gen, const std::atomic<bool>& stop) {
    std::unique_lock<std::mutex> lock(mu_);
    while (completed_ < gen) {
      if (stop.load()) return false;
      cv_.wait_for(lock, std::chrono::milliseconds(50));
    }
    return true;
  }

  Status query(bool* done) override {
    std::lock_guard<std::mutex> lock(mu_);
    *done = completed_ >= recorded_;
    return Status::Ok();
  }
  Status synchronize(int64_t timeout_ns) override {
    std::unique_lock<std::mutex> lock(mu_);
    uint64_t target = recorded_;
    auto deadline = Clock::now() + std::chrono::nanoseconds(timeout_ns);
    if (!cv_.wait_until(lock, deadline, [&] { return completed_ >= target; })) {
      return Status::Error(Code::kTimeout, "event did not complete within " +
                                               std::to_string(timeout_ns / 1000000) + " ms");
    }
    return last_status_;
  }
  void add_waiter(Waiter w) override {
    Status st;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (completed_ < recorded_) {
        waiters_.emplace_back(recorded_, std::move(w));
        return;
      }
      st = last_status_;
    }
    w(st);
  }
  Status elapsed_ms(Event& end, double* ms) override {
    auto* e = dynamic_cast<CpuEvent*>(&end);
    if (e == nullptr) return Status::Invalid("elapsedTime: both events must be on the same device");
    std::lock_guard<std::mutex> lock(mu_);
    if (completed_ == 0 || completed_ < recorded_) {
      return Status::Invalid("elapsedTime: the start event has not completed");
    }
    std::lock_guard<std::mutex> lock2(e->mu_);
    if (e->completed_ == 0 || e->completed_ < e->recorded_) {
      return Status::Invalid("elapsedTime: the end event has not completed");
    }
    *ms = std::chrono::duration<double, std::milli>(e->completed_at_ - completed_at_).count();
    return Status::Ok();
  }
  void stamp() {
    std::lock_guard<std::mutex> lock(mu_);
    completed_at_ = Clock::now();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t recorded_ = 0;
  uint64_t completed_ = 0;
  Status last_status_;
  Clock::time_point completed_at_{};
  std::vector<std::pair<uint64_t, Waiter>> waiters_;
};

struct CpuOp {
  std::function<Status()> run;
  std::function<void()> drop;  // called instead of run when the stream shuts down or it is cancelled
  const char* label;
  // Memory the op touches: acquired from the registry for exactly as long as `run` runs, so that
  // the memory cannot be released under it; the op is cancelled if one is no longer usable.
  std::vector<RangeRequest> ranges;
};

class CpuStream final : public Stream, public std::enable_shared_from_this<CpuStream> {
 public:
  explicit CpuStream(const StreamOptions& opts) : Stream(X_DEVICE_CPU), record_(opts.record_ops) {}

  void start() {
    std::thread([self = shared_from_this()] { self->loop(); }).detach();
  }

  // Drops queued work and waits (bounded) for the thread to exit. Environment teardown only.
  void stop_and_join(int timeout_ms) override {
    stop_.store(true);
    cv_.notify_all();
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return exited_; });
  }

  Status use_range(uint64_t ptr, uint64_t bytes, const char* what) override {
    if (bytes == 0) return Status::Ok();
    return MemoryRegistry::instance().check(X_DEVICE_CPU, ptr, bytes, what, true);
  }

  Status copy(uint64_t dst, uint64_t src, uint64_t bytes) override {
    auto& reg = MemoryRegistry::instance();
    X_RETURN_IF_ERROR(reg.check(X_DEVICE_CPU, dst, bytes, "copy destination", true));
    X_RETURN_IF_ERROR(reg.check(X_DEVICE_CPU, src, bytes, "copy source", true));
    // Acquired again when it runs: the memory may have been freed or put to sleep meanwhile.
    return push([=] {
      std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes);
      return Status::Ok();
    }, nullptr, "copy", {{dst, bytes, "copy destination"}, {src, bytes, "copy source"}});
  }

  Status fill(uint64_t dst, uint64_t bytes, uint64_t pattern, int width) override {
    auto& reg = MemoryRegistry::instance();
    X_RETURN_IF_ERROR(reg.check(X_DEVICE_CPU, dst, bytes, "fill destination", true));
    return push([=] {
      auto* p = reinterpret_cast<unsigned char*>(dst);
      if (width == 1) {
        std::memset(p, static_cast<int>(pattern & 0xff), bytes);
      } else {
        for (uint64_t i = 0; i < bytes; i += width) {
          std::memcpy(p + i, &pattern, static_cast<size_t>(std::min<uint64_t>(width, bytes - i)));
        }
      }
      return Status::Ok();
    }, nullptr, "fill", {{dst, bytes, "fill destination"}});
  }

  Status delay(uint64_t ns) override {
    return push([ns, this] {
      interruptible_sleep(ns, stop_);
      return Status::Ok();
    }, nullptr, "delay");
  }

  Status enqueue_host(x_host_fn fn, x_cleanup_fn cleanup, void* user, const char* label) override {
    return enqueue_host_ranges(fn, cleanup, user, label, {});
  }

  Status enqueue_host_ranges(x_host_fn fn, x_cleanup_fn cleanup, void* user, const char* label,
                             std::vector<RangeRequest> ranges) override {
    std::string name = label != nullptr ? label : "host";
    for (const RangeRequest& r : ranges) X_RETURN_IF_ERROR(use_range(r.ptr, r.bytes, r.what.c_str()));
    return push(
        [fn, cleanup, user, name] {
          int rc = fn(user);
          if (cleanup != nullptr) cleanup(user);
          if (rc != 0) {
            return Status::Error(Code::kStream, "host function '" + name + "' failed with status " +
                                                    std::to_string(rc));
          }
          return Status::Ok();
        },
        [cleanup, user] {
          if (cleanup != nullptr) cleanup(user);
        },
        intern(name), std::move(ranges));
  }

  Status record(Event& event) override {
    auto* e = dynamic_cast<CpuEvent*>(&event);
    if (e == nullptr) return Status::Invalid("event.record: a CPU stream can only record CPU events");
    uint64_t gen = e->next_generation();
    // The op keeps the event alive until it runs.
    std::shared_ptr<CpuEvent> keep = e->shared_from_this();
    auto self = this;
    return push([keep, gen, self] {
      keep->stamp();
      keep->complete(gen, self->peek_error());
      return Status::Ok();
    }, [keep, gen] { keep->complete(gen, Status::Error(Code::kStream, "stream shut down")); },
                "event.record");
  }

  Status wait_event(Event& event) override {
    auto* e = dynamic_cast<CpuEvent*>(&event);
    if (e == nullptr) {
      return Status::Invalid("stream.waitEvent: a CPU stream can only wait on CPU events");
    }
    uint64_t target = e->recorded();
    if (target == 0) return Status::Ok();  // never recorded: nothing to wait for (as in CUDA)
    std::shared_ptr<CpuEvent> keep = e->shared_from_this();
    return push([keep, target, this] {
      if (!keep->wait_generation(target, stop_)) return Status::Error(Code::kStream, "stream shut down");
      return Status::Ok();
    }, nullptr, "stream.waitEvent");
  }

  Status synchronize(int64_t timeout_ns) override {
    std::unique_lock<std::mutex> lock(mu_);
    uint64_t target = enqueued_;
    auto deadline = Clock::now() + std::chrono::nanoseconds(timeout_ns);
    if (!done_cv_.wait_until(lock, deadline, [&] { return completed_ >= target; })) {
      return Status::Error(Code::kTimeout, "stream.synchronize: " + std::to_string(target - completed_) +
                                               " operation(s) still pending after " +
                                               std::to_string(timeout_ns / 1000000) + " ms");
    }
    Status st = error_;
    error_ = Status::Ok();
    return st;
  }

  void add_waiter(Waiter w) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (completed_ >= enqueued_) {
      Status st = error_;
      error_ = Status::Ok();  // a stream-level wait reports a failure once, as synchronize does
      lock.unlock();
      w(st);
      return;
    }
    waiters_.emplace_back(enqueued_, std::move(w));
  }

  void close() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
    }
    cv_.notify_all();
  }

  std::vector<std::string> completed_ops() override {
    std::lock_guard<std::mutex> lock(mu_);
    return {log_.begin(), log_.end()};
  }

 private:
  Status push(std::function<Status()> run, std::function<void()> drop, const char* label,
              std::vector<RangeRequest> ranges = {}) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closing_) return Status::Invalid("the stream was disposed; create a new one");
      queue_.push_back(CpuOp{std::move(run), std::move(drop), label, std::move(ranges)});
      ++enqueued_;
    }
    cv_.notify_one();
    return Status::Ok();
  }

  // Runs `op` while holding its ranges; cancels it (drop, and the stream fails) when one of them
  // was freed or unmapped since the enqueue.
  Status run_op(CpuOp& op) {
    if (op.ranges.empty()) return op.run();
    auto& reg = MemoryRegistry::instance();
    std::vector<RangeUse> uses;
    Status st = reg.acquire(X_DEVICE_CPU, op.ranges, &uses);
    if (!st.ok()) {
      if (op.drop) op.drop();
      if (std::strcmp(op.label, "copy") != 0 && std::strcmp(op.label, "fill") != 0) {
        st.message = std::string(op.label) + " not run: " + st.message;
      }
      return st;
    }
    st = op.run();
    reg.release(uses);
    return st;
  }

  Status peek_error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

  // Host-function labels come from other addons; keep a stable copy for the op log.
  const char* intern(const std::string& s) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& l : labels_) {
      if (*l == s) return l->c_str();
    }
    labels_.push_back(std::make_unique<std::string>(s));
    return labels_.back()->c_str();
  }

  void loop() {
    for (;;) {
      CpuOp op;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(100), [&] {
          return !queue_.empty() || closing_ || stop_.load();
        });
        if (stop_.load()) break;
        if (queue_.empty()) {
          if (closing_) break;
          continue;
        }
        op = std::move(queue_.front());
        queue_.pop_front();
      }
      Status st = run_op(op);
      std::vector<Waiter> ready;
      Status report;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++completed_;
        if (!st.ok() && error_.ok()) error_ = st;
        if (record_) {
          log_.emplace_back(op.label);
          if (log_.size() > 4096) log_.pop_front();
        }
        for (auto it = waiters_.begin(); it != waiters_.end();) {
          if (it->first <= completed_) {
            ready.push_back(std::move(it->second));
            it = waiters_.erase(it);
          } else {
            ++it;
          }
        }
        report = error_;
        if (!ready.empty()) error_ = Status::Ok();  // reported to a stream-level wait: once
      }
      done_cv_.notify_all();
      for (auto& w : ready) w(report);
    }
    // Shutdown: drop what is left so cleanups and waiters still run exactly once.
    std::deque<CpuOp> rest;
    std::vector<std::pair<uint64_t, Waiter>> waiters;
    {
      std::lock_guard<std::mutex> lock(mu_);
      rest.swap(queue_);
      waiters.swap(waiters_);
      completed_ += rest.size();
    }
    for (auto& op : rest) {
      if (op.drop) op.drop();
    }
    for (auto& w : waiters) w.second(Status::Error(Code::kStream, "stream shut down"));
    {
      std::lock_guard<std::mutex> lock(mu_);
      exited_ = true;
    }
    done_cv_.notify_all();
  }

  bool record_;
  std::mutex mu_;
  std::condition_variable cv_;       // work available
  std::condition_variable done_cv_;  // work completed
  std::deque<CpuOp> queue_;
  uint64_t enqueued_ = 0;
  uint64_t completed_ = 0;
  bool closing_ = false;
  bool exited_ = false;
  std::atomic<bool> stop_{false};
  Status error_;
  std::vector<std::pair<uint64_t, Waiter>> waiters_;
  std::deque<const char*> log_;
  std::vector<std::unique_ptr<std::string>> labels_;
};

}  // namespace

Status create_cpu_stream(const StreamOptions& opts, std::shared_ptr<Stream>* out) {
  auto s = std::make_shared<CpuStream>(opts);
  s->start();
  *out = s;
  return Status::Ok();
}

Status create_cpu_event(std::shared_ptr<Event>* out) {
  *out = std::make_shared<CpuEvent>();
  return Status::Ok();
}

}  // namespace x
