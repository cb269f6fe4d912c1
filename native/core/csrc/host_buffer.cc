#include "host_buffer.h"

#include <sys/mman.h>

#include <memory>

#include "device.h"
#include "registry.h"
#include "x/core_api.h"

namespace x {

Status host_alloc(int device, uint64_t bytes, uint64_t* out) {
  if (bytes == 0) return Status::Invalid("HostBuffer size must be at least 1 byte");
  void* p = nullptr;
  if (device < 0) {
    p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return Status::Error(Code::kOutOfMemory,
                           "cannot allocate " + std::to_string(bytes) + " bytes of host memory");
    }
  } else {
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(driver(&d));
    X_RETURN_IF_ERROR(use_device(device));
    X_RETURN_IF_ERROR(
        cuda_status(d->cuMemHostAlloc(&p, bytes, cuda::CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc"));
  }
  uint64_t ptr = reinterpret_cast<uint64_t>(p);
  Status st = MemoryRegistry::instance().add(X_DEVICE_CPU, ptr, bytes, RangeState::kMapped,
                                             device < 0 ? "HostBuffer" : "HostBuffer(pinned)");
  if (!st.ok()) {
    host_free(device, ptr, bytes);
    return st;
  }
  *out = ptr;
  return Status::Ok();
}

namespace {

Status release_host(int device, uint64_t ptr, uint64_t bytes) {
  void* p = reinterpret_cast<void*>(ptr);
  if (device < 0) {
    if (munmap(p, bytes) != 0) return Status::Error(Code::kInternal, "munmap of a HostBuffer failed");
    return Status::Ok();
  }
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  X_RETURN_IF_ERROR(use_device(device));
  return cuda_status(d->cuMemFreeHost(p), "cuMemFreeHost");
}

}  // namespace

// A CPU stream may still be copying into the buffer (a worker torn down mid-stream, or a dispose
// before synchronize): the memory goes back to the system only when no stream operation uses it,
// here or on the stream thread that finishes last. Work queued behind that is cancelled.
Status host_free(int device, uint64_t ptr, uint64_t bytes) {
  auto result = std::make_shared<Status>();
  bool registered = MemoryRegistry::instance().retire(
      X_DEVICE_CPU, ptr, [result, device, ptr, bytes] { *result = release_host(device, ptr, bytes); });
  if (!registered) return release_host(device, ptr, bytes);  // its registration had failed
  return *result;  // OK when the release is deferred to the stream thread
}

Status device_alloc_for_testing(int device, uint64_t bytes, uint64_t* out) {
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  X_RETURN_IF_ERROR(use_device(device));
  cuda::CUdeviceptr p = 0;
  X_RETURN_IF_ERROR(cuda_status(d->cuMemAlloc(&p, bytes), "cuMemAlloc"));
  *out = p;
  return Status::Ok();
}

Status device_free_for_testing(int device, uint64_t ptr) {
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  X_RETURN_IF_ERROR(use_device(device));
  return cuda_status(d->cuMemFree(ptr), "cuMemFree");
}

}  // namespace x
