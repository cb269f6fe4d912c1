// A fixed pool of worker threads shared by every kernel of this addon. A kernel runs on its
// stream's thread and fans out with parallel_for; the calling thread takes part, so a pool of N
// threads uses N-1 workers. One parallel_for at a time: kernels from two streams take turns.
#pragma once

#include <cstdint>
#include <functional>

namespace x::kernels {

// Runs fn(begin, end) over [0, n) split into at most `threads()` contiguous chunks of at least
// `grain` items. Returns when every chunk is done.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Threads a parallel_for uses (the machine's cores, or X_KERNELS_THREADS).
int threads();

}  // namespace x::kernels
