#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define X_PAUSE() _mm_pause()
#else
#define X_PAUSE() std::this_thread::yield()
#endif

namespace x::kernels {
namespace {

// Workers spin briefly before sleeping: a forward pass enqueues ~100 ops back to back, and a
// futex wake per op (tens of microseconds) would cost as much as a small op itself.
constexpr int kSpinIterations = 2000;  // ~5-20 µs of pause instructions

class Pool {
 public:
  explicit Pool(int n) : n_(n) {
    for (int i = 1; i < n_; i++) {
      std::thread([this, i] { worker(i); }).detach();  // lives as long as the process
    }
  }

  int size() const { return n_; }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    int64_t chunks = std::min<int64_t>(n_, std::max<int64_t>(1, n / std::max<int64_t>(1, grain)));
    if (chunks <= 1) {
      if (n > 0) fn(0, n);
      return;
    }
    std::lock_guard<std::mutex> serial(run_mu_);
    fn_ = &fn;
    n_items_ = n;
    chunks_ = chunks;
    pending_.store(chunks - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);  // pairs with a sleeping worker's predicate check
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) cv_.notify_all();
    run_chunk(0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; spins++) {
      if (spins < kSpinIterations) X_PAUSE();
      else std::this_thread::yield();
    }
    fn_ = nullptr;
  }

 private:
  void run_chunk(int64_t c) {
    int64_t begin = n_items_ * c / chunks_;
    int64_t end = n_items_ * (c + 1) / chunks_;
    if (begin < end) (*fn_)(begin, end);
  }

  void worker(int index) {
    uint64_t seen = 0;
    for (;;) {
      int spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
        X_PAUSE();
        spins++;
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1, std::memory_order_acq_rel);
        cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_acq_rel);
      }
      seen = generation_.load(std::memory_order_acquire);
      if (index < chunks_) {
        run_chunk(index);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  const int n_;
  std::mutex run_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_items_ = 0, chunks_ = 0;
  std::atomic<int64_t> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> sleepers_{0};
};

int configured_threads() {
  if (const char* env = std::getenv("X_KERNELS_THREADS")) {
    int v = std::atoi(env);
    if (v >= 1 && v <= 1024) return v;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

Pool& pool() {
  static Pool* p = new Pool(configured_threads());  // never destroyed: workers are detached
  return *p;
}

}  // namespace

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  pool().run(n, grain, fn);
}

int threads() { return pool().size(); }

}  // namespace x::kernels
