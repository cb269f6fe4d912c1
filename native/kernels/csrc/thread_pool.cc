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
// Chunks per thread of one parallel_for: a few, so a thread that starts late just takes fewer.
constexpr int64_t kChunksPerThread = 2;

class Pool {
 public:
  explicit Pool(int n) : n_(n) {
    for (int i = 1; i < n_; i++) {
      std::thread([this, i] { worker(i); }).detach();  // lives as long as the process
    }
  }

  int size() const { return n_; }

  // Chunks are claimed from a shared counter, not assigned: when another process holds a core and
  // a worker is slow to wake, the calling thread takes its chunks instead of waiting for it.
  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    const int64_t max_chunks = n_ == 1 ? 1 : static_cast<int64_t>(n_) * kChunksPerThread;
    int64_t chunks = std::min<int64_t>(max_chunks, std::max<int64_t>(1, n / std::max<int64_t>(1, grain)));
    if (chunks <= 1) {
      if (n > 0) fn(0, n);
      return;
    }
    std::lock_guard<std::mutex> serial(run_mu_);
    fn_ = &fn;
    n_items_ = n;
    done_.store(0, std::memory_order_relaxed);
    next_.store(chunks << kIndexBits, std::memory_order_release);  // publishes fn_, n_items_, done_
    {
      std::lock_guard<std::mutex> lock(mu_);  // pairs with a sleeping worker's predicate check
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) cv_.notify_all();
    claim_chunks();
    for (int spins = 0; done_.load(std::memory_order_acquire) != chunks; spins++) {
      if (spins < kSpinIterations) X_PAUSE();
      else std::this_thread::yield();
    }
    // Closed (0 chunks) until the next run: a late worker's claim finds nothing.
    next_.store(0, std::memory_order_release);
    fn_ = nullptr;
  }

 private:
  // Runs chunks until none is left unclaimed. The claim counter and the run's chunk count share one
  // atomic word, so a claim always sees the count of the run it claims from: a worker arriving
  // late finds the run closed, or claims from the next one, whose state the store published (and
  // which cannot finish, nor fn_ change, before the claimed chunk is done).
  void claim_chunks() {
    for (;;) {
      const int64_t v = next_.fetch_add(1, std::memory_order_acq_rel);
      const int64_t c = v & kIndexMask, chunks = v >> kIndexBits;
      if (c >= chunks) return;
      int64_t begin = n_items_ * c / chunks;
      int64_t end = n_items_ * (c + 1) / chunks;
      if (begin < end) (*fn_)(begin, end);
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  void worker(int /*index*/) {
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
      claim_chunks();
    }
  }

  const int n_;
  std::mutex run_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_items_ = 0;
  // next_ = chunks << kIndexBits | claims so far (claims past the end stay far below 2^32).
  static constexpr int kIndexBits = 32;
  static constexpr int64_t kIndexMask = (int64_t{1} << kIndexBits) - 1;
  std::atomic<int64_t> next_{0}, done_{0};
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
