// The memory mechanics @x/cumem needs from a device: reserve address space once, map and unmap
// physical memory at a fixed address, copy between device memory and host backups.
// Two implementations: CPU (mmap) and CUDA (driver virtual memory management).
#pragma once

#include <cstdint>
#include <memory>

#include "x/status.h"

namespace x::cumem {

// Physical backing of one mapped range (meaningful to the backend only).
struct Physical {
  uint64_t handle = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual int device() const = 0;              // -1 CPU, N CUDA
  virtual uint64_t granularity() const = 0;    // sizes are rounded up to this
  virtual Status reserve(uint64_t bytes, uint64_t* va) = 0;
  virtual Status release(uint64_t va, uint64_t bytes) = 0;  // the address range itself
  virtual Status map(uint64_t va, uint64_t bytes, Physical* out) = 0;
  virtual Status unmap(uint64_t va, uint64_t bytes, const Physical& p) = 0;
  // Host memory for backups: pinned on CUDA so copies run at link speed.
  virtual Status host_alloc(uint64_t bytes, void** out) = 0;
  virtual void host_free(void* p, uint64_t bytes) = 0;
  // Enqueue copies on the backend's private copy stream (CUDA) or run them now (CPU).
  virtual Status to_host(void* dst, uint64_t src_va, uint64_t bytes) = 0;
  virtual Status from_host(uint64_t dst_va, const void* src, uint64_t bytes) = 0;
  virtual Status fill(uint64_t va, uint64_t bytes, uint8_t value) = 0;
  // Waits for every copy enqueued above.
  virtual Status sync_copies() = 0;
  // Waits for all work on the device (every stream, any library) before mappings change.
  virtual Status quiesce() = 0;
};

Status make_cpu_backend(std::unique_ptr<Backend>* out);
Status make_cuda_backend(int device, std::unique_ptr<Backend>* out);

}  // namespace x::cumem
