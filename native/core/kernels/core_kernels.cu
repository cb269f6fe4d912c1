// Kernels that @x/core itself launches. Compiled to a fatbin (sm_80, sm_90a, PTX for newer GPUs),
// embedded in the addon and loaded with cuModuleLoadData: no CUDA runtime is linked.
#include <cstdint>

// Occupies the stream for `ns` nanoseconds of GPU time: how tests put real device work in flight
// (e.g. a kernel still running when @x/cumem is asked to sleep).
extern "C" __global__ void x_delay_kernel(unsigned long long ns) {
  unsigned long long start;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  unsigned long long now = start;
  while (now - start < ns) {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  }
}

// Fills `count` 8-byte words with `pattern` (grid-stride loop).
extern "C" __global__ void x_fill64_kernel(unsigned long long dst, unsigned long long count,
                                           unsigned long long pattern) {
  auto* p = reinterpret_cast<unsigned long long*>(dst);
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < count;
       i += (unsigned long long)gridDim.x * blockDim.x) {
    p[i] = pattern;
  }
}
