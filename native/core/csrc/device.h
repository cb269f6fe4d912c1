// CUDA devices: primary contexts, device properties, and the module of core kernels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "x/cuda_driver.h"
#include "x/status.h"

namespace x {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
  int cc_major = 0;
  int cc_minor = 0;
  int multiprocessors = 0;
  bool vmm_supported = false;
};

// The driver table, or a kNoDevice status explaining why CUDA is unavailable.
Status driver(const cuda::Driver** out);

// Makes the primary context of `device` current on the calling thread (retained once, kept for the
// life of the process). Contexts are per-thread driver state; streams are never implicit in x.
Status use_device(int device);

Status device_count(int* out);
Status device_info(int device, CudaDeviceInfo* out);

// Core kernels compiled into this addon (delay, 8-byte fill). False when built without nvcc.
bool kernels_compiled_in();
const char* kernel_architectures();
// Launch the delay kernel (spins `ns` nanoseconds) or the 8-byte fill on `stream`.
Status launch_delay(int device, cuda::CUstream stream, uint64_t ns);
Status launch_fill64(int device, cuda::CUstream stream, uint64_t dst, uint64_t count,
                     uint64_t pattern);

}  // namespace x
