// Host buffers: page-aligned host memory (pinned with the driver when a CUDA device is named).
#pragma once

#include <cstdint>

#include "x/status.h"

namespace x {

// `device` -1 gives plain host memory; N gives memory pinned for cuda:N (usable by every context).
// The range is registered with the memory registry as host memory (device -1).
Status host_alloc(int device, uint64_t bytes, uint64_t* out);
Status host_free(int device, uint64_t ptr, uint64_t bytes);

// Plain device memory for tests and benchmarks only: engine memory comes from @x/cumem.
Status device_alloc_for_testing(int device, uint64_t bytes, uint64_t* out);
Status device_free_for_testing(int device, uint64_t ptr);

}  // namespace x
