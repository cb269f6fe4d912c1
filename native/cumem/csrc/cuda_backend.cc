// CUDA backend over the driver's virtual memory management: cuMemAddressReserve once per
// allocation, cuMemCreate + cuMemMap + cuMemSetAccess to map, cuMemUnmap + cuMemRelease to give the
// physical memory back. Backups are pinned host memory; copies run on a private non-blocking
// stream in chunks that the copy engine overlaps.
#include <algorithm>
#include <array>
#include <mutex>

#include "backend.h"

namespace x::cumem {
namespace {

using namespace x::cuda;

constexpr uint64_t kChunk = 64ull << 20;  // bytes per copy command

Status get_driver(const Driver** d) {
  const DriverLoad& l = load_driver();
  if (l.driver == nullptr) return Status::Error(Code::kNoDevice, "CUDA is unavailable: " + l.why);
  *d = l.driver;
  return Status::Ok();
}

// The primary context of `device`, retained once per process (shared with @x/core's).
Status primary_context(int device, CUcontext* out) {
  static std::mutex mu;
  static std::array<CUcontext, 64> ctx{};
  const Driver* d = nullptr;
  X_RETURN_IF_ERROR(get_driver(&d));
  int n = 0;
  X_RETURN_IF_ERROR(cuda_status(d->cuDeviceGetCount(&n), "cuDeviceGetCount"));
  if (device < 0 || device >= n || device >= 64) {
    return Status::Error(Code::kNoDevice, "cuda:" + std::to_string(device) + " does not exist (" +
                                              std::to_string(n) + " CUDA device(s))");
  }
  std::lock_guard<std::mutex> lock(mu);
  if (ctx[device] == nullptr) {
    CUdevice dev = 0;
    X_RETURN_IF_ERROR(cuda_status(d->cuDeviceGet(&dev, device), "cuDeviceGet"));
    X_RETURN_IF_ERROR(cuda_status(d->cuDevicePrimaryCtxRetain(&ctx[device], dev), "cuDevicePrimaryCtxRetain"));
  }
  *out = ctx[device];
  return Status::Ok();
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const Driver* d, CUcontext ctx, uint64_t gran)
      : device_(device), d_(d), ctx_(ctx), gran_(gran) {}
  ~CudaBackend() override {
    if (stream_ != nullptr && enter().ok()) d_->cuStreamDestroy(stream_);
  }

  Status init() {
    X_RETURN_IF_ERROR(enter());
    return cuda_status(d_->cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  }

  int device() const override { return device_; }
  uint64_t granularity() const override { return gran_; }

  Status reserve(uint64_t bytes, uint64_t* va) override {
    X_RETURN_IF_ERROR(enter());
    CUdeviceptr p = 0;
    X_RETURN_IF_ERROR(cuda_status(d_->cuMemAddressReserve(&p, bytes, gran_, 0, 0), "cuMemAddressReserve"));
    *va = p;
    return Status::Ok();
  }
  Status release(uint64_t va, uint64_t bytes) override {
    X_RETURN_IF_ERROR(enter());
    return cuda_status(d_->cuMemAddressFree(va, bytes), "cuMemAddressFree");
  }
  Status map(uint64_t va, uint64_t bytes, Physical* out) override {
    X_RETURN_IF_ERROR(enter());
    CUmemAllocationProp prop = props();
    CUmemGenericAllocationHandle h = 0;
    X_RETURN_IF_ERROR(cuda_status(d_->cuMemCreate(&h, bytes, &prop, 0), "cuMemCreate"));
    Status st = cuda_status(d_->cuMemMap(va, bytes, 0, h, 0), "cuMemMap");
    if (st.ok()) {
      CUmemAccessDesc access{};
      access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
      access.location.id = device_;
      access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
      st = cuda_status(d_->cuMemSetAccess(va, bytes, &access, 1), "cuMemSetAccess");
      if (!st.ok()) d_->cuMemUnmap(va, bytes);
    }
    if (!st.ok()) {
      d_->cuMemRelease(h);
      return st;
    }
    out->handle = h;
    return Status::Ok();
  }
  Status unmap(uint64_t va, uint64_t bytes, const Physical& p) override {
    X_RETURN_IF_ERROR(enter());
    X_RETURN_IF_ERROR(cuda_status(d_->cuMemUnmap(va, bytes), "cuMemUnmap"));
    return cuda_status(d_->cuMemRelease(p.handle), "cuMemRelease");
  }
  Status host_alloc(uint64_t bytes, void** out) override {
    X_RETURN_IF_ERROR(enter());
    return cuda_status(d_->cuMemHostAlloc(out, bytes, CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc");
  }
  void host_free(void* p, uint64_t) override {
    if (enter().ok()) d_->cuMemFreeHost(p);
  }
  Status to_host(void* dst, uint64_t src_va, uint64_t bytes) override {
    X_RETURN_IF_ERROR(enter());
    for (uint64_t off = 0; off < bytes; off += kChunk) {
      uint64_t n = std::min(kChunk, bytes - off);
      X_RETURN_IF_ERROR(cuda_status(
          d_->cuMemcpyAsync(reinterpret_cast<CUdeviceptr>(dst) + off, src_va + off, n, stream_),
          "cuMemcpyAsync(device to host)"));
    }
    return Status::Ok();
  }
  Status from_host(uint64_t dst_va, const void* src, uint64_t bytes) override {
    X_RETURN_IF_ERROR(enter());
    for (uint64_t off = 0; off < bytes; off += kChunk) {
      uint64_t n = std::min(kChunk, bytes - off);
      X_RETURN_IF_ERROR(cuda_status(
          d_->cuMemcpyAsync(dst_va + off, reinterpret_cast<CUdeviceptr>(src) + off, n, stream_),
          "cuMemcpyAsync(host to device)"));
    }
    return Status::Ok();
  }
  Status fill(uint64_t va, uint64_t bytes, uint8_t value) override {
    X_RETURN_IF_ERROR(enter());
    return cuda_status(d_->cuMemsetD8Async(va, value, bytes, stream_), "cuMemsetD8Async");
  }
  Status sync_copies() override {
    X_RETURN_IF_ERROR(enter());
    return cuda_status(d_->cuStreamSynchronize(stream_), "cuStreamSynchronize");
  }
  Status quiesce() override {
    X_RETURN_IF_ERROR(enter());
    return cuda_status(d_->cuCtxSynchronize(), "cuCtxSynchronize");
  }

 private:
  Status enter() const { return cuda_status(d_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent"); }
  CUmemAllocationProp props() const {
    CUmemAllocationProp prop{};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = device_;
    return prop;
  }

  int device_;
  const Driver* d_;
  CUcontext ctx_;
  uint64_t gran_;
  CUstream stream_ = nullptr;
};

}  // namespace

Status make_cuda_backend(int device, std::unique_ptr<Backend>* out) {
  const Driver* d = nullptr;
  X_RETURN_IF_ERROR(get_driver(&d));
  CUcontext ctx = nullptr;
  X_RETURN_IF_ERROR(primary_context(device, &ctx));
  X_RETURN_IF_ERROR(cuda_status(d->cuCtxSetCurrent(ctx), "cuCtxSetCurrent"));
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  size_t gran = 0;
  X_RETURN_IF_ERROR(cuda_status(
      d->cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
      "cuMemGetAllocationGranularity"));
  auto b = std::make_unique<CudaBackend>(device, d, ctx, gran);
  X_RETURN_IF_ERROR(b->init());
  *out = std::move(b);
  return Status::Ok();
}

}  // namespace x::cumem
