// The CUDA side of @x/kernels on one device: the kernel modules embedded in the addon (loaded once
// with cuModuleLoadData on the device's primary context, every function resolved up front so
// nothing loads lazily inside a graph capture), device properties, the device-wide error word
// kernels report bad indices into, and kernel launches on a caller's stream. Pure C++ over the
// driver table (x/cuda_driver.h); no Node-API.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "params.h"
#include "x/cuda_driver.h"
#include "x/status.h"

namespace x::kernels::gpu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

class DeviceRuntime {
 public:
  // The runtime of `device`, created on first use (thread-safe). kNoDevice without a driver.
  static Status get(int device, DeviceRuntime** out);

  int device() const { return device_; }
  int multiprocessors() const { return sms_; }
  int max_dynamic_smem() const { return max_smem_optin_; }
  const cuda::Driver* driver() const { return d_; }
  // Makes the device's primary context current on the calling thread.
  Status enter() const;
  // Enqueues kernel `name` with `args` (one struct, passed by value) on `stream`. `pdl`: with
  // programmatic dependent launch where the device has it (sm_90+, and X_KERNELS_PDL is not 0) —
  // only for kernels that call grid_dep_wait() before reading what earlier kernels write.
  // `carveout` >= 0: this launch's preferred shared-memory carveout (percent), overriding the
  // function's (see carveout_for).
  Status launch(const char* name, Dim3 grid, Dim3 block, unsigned smem, cuda::CUstream stream, void* args,
                bool pdl = false, int carveout = -1) const;
  // Blocks of `name` resident per multiprocessor at `block` threads and `smem` dynamic bytes, at the
  // function's preferred carveout (1 if the driver cannot tell).
  int resident_blocks(const char* name, unsigned block, unsigned smem) const;
  // Shared memory a block of `name` with `smem` dynamic bytes takes from its multiprocessor
  // (static + dynamic + the driver's reservation).
  uint64_t block_smem(const char* name, unsigned smem) const;
  // Shared memory per multiprocessor at most (228 KiB on an H100).
  uint64_t smem_per_sm() const { return smem_per_sm_; }
  // The carveout (percent) whose configuration holds `bytes` per multiprocessor, for launch().
  int carveout_for(uint64_t bytes) const;
  // The carveout every kernel of the batch-1 decode chain launches with (the one-row linears, the
  // lean decode attention and its combine): one configuration for all of them, since a
  // multiprocessor changes its split of L1 and shared memory only while idle, and kernels with
  // different preferences that follow one another (programmatic dependent launch keeps SMs busy
  // across kernel boundaries) would leave each SM in whichever one its last idle moment picked.
  // 64 KiB holds three blocks of the one-row linears at hidden sizes up to 4,096 and one lean
  // decode block beside them, which then becomes resident during the qkv projection
  // (attention_decode.cu); L1 keeps 192 KiB. -1: none (X_KERNELS_DECODE_CARVEOUT, a tuning knob,
  // sets another percentage, -1 for none).
  int decode_carveout() const { return decode_carveout_; }
  // Device address of the ErrorWord kernels of this device report into.
  uint64_t error_word() const { return err_dev_; }
  // Enqueues: copy the error word into host memory, then clear it (stream order).
  Status fetch_errors(cuda::CUstream stream) const;
  // The error word as last fetched (read after the stream passed fetch_errors).
  xk::ErrorWord fetched_errors() const { return *err_host_; }

 private:
  Status init(int device);
  int device_ = -1;
  const cuda::Driver* d_ = nullptr;
  cuda::CUcontext ctx_ = nullptr;
  int sms_ = 0, max_smem_optin_ = 48 * 1024, smem_reserved_ = 0;
  uint64_t smem_per_sm_ = 0;
  int decode_carveout_ = -1;
  bool pdl_ = false;
  mutable std::mutex occ_mu_;
  mutable std::unordered_map<std::string, int> occupancy_;
  std::vector<cuda::CUmodule> modules_;
  std::unordered_map<std::string, cuda::CUfunction> fns_;
  std::unordered_map<std::string, int> static_smem_;  // bytes of each function's static shared memory
  uint64_t err_dev_ = 0;
  xk::ErrorWord* err_host_ = nullptr;
};

// Whether the kernels were compiled in (nvcc found at build time), and for which targets.
bool kernels_compiled_in();
const char* kernel_architectures();

// True while `stream` captures a graph (driver query; false if the driver cannot tell).
bool stream_capturing(const cuda::Driver* d, cuda::CUstream stream);

}  // namespace x::kernels::gpu
