#include "device.h"

#include <array>
#include <mutex>

#if X_HAVE_CUDA_KERNELS
#include "core_kernels_fatbin.h"  // generated: x_core_fatbin[], X_CORE_KERNEL_ARCHS
#endif

namespace x {
namespace {

constexpr int kMaxDevices = 64;

struct DeviceSlot {
  std::once_flag once;
  cuda::CUcontext ctx = nullptr;
  Status status;
  std::once_flag module_once;
  cuda::CUmodule module = nullptr;
  cuda::CUfunction delay_fn = nullptr;
  cuda::CUfunction fill64_fn = nullptr;
  Status module_status;
};

std::array<DeviceSlot, kMaxDevices>& slots() {
  static auto* s = new std::array<DeviceSlot, kMaxDevices>();  // lives until process exit
  return *s;
}

Status check_index(const cuda::Driver* d, int device) {
  int n = 0;
  X_RETURN_IF_ERROR(cuda_status(d->cuDeviceGetCount(&n), "cuDeviceGetCount"));
  if (device < 0 || device >= n || device >= kMaxDevices) {
    return Status::Error(Code::kNoDevice, "cuda:" + std::to_string(device) +
                                              " does not exist (this machine has " +
                                              std::to_string(n) + " CUDA device(s))");
  }
  return Status::Ok();
}

}  // namespace

Status driver(const cuda::Driver** out) {
  const cuda::DriverLoad& l = cuda::load_driver();
  if (l.driver == nullptr) return Status::Error(Code::kNoDevice, "CUDA is unavailable: " + l.why);
  *out = l.driver;
  return Status::Ok();
}

Status use_device(int device) {
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  if (device < 0 || device >= kMaxDevices) return check_index(d, device);
  DeviceSlot& slot = slots()[device];
  std::call_once(slot.once, [&] {
    slot.status = check_index(d, device);
    if (!slot.status.ok()) return;
    cuda::CUdevice dev = 0;
    slot.status = cuda_status(d->cuDeviceGet(&dev, device), "cuDeviceGet");
    if (!slot.status.ok()) return;
    slot.status = cuda_status(d->cuDevicePrimaryCtxRetain(&slot.ctx, dev), "cuDevicePrimaryCtxRetain");
  });
  X_RETURN_IF_ERROR(slot.status);
  return cuda_status(d->cuCtxSetCurrent(slot.ctx), "cuCtxSetCurrent");
}

Status device_count(int* out) {
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  return cuda_status(d->cuDeviceGetCount(out), "cuDeviceGetCount");
}

Status device_info(int device, CudaDeviceInfo* out) {
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  X_RETURN_IF_ERROR(use_device(device));
  cuda::CUdevice dev = 0;
  X_RETURN_IF_ERROR(cuda_status(d->cuDeviceGet(&dev, device), "cuDeviceGet"));
  char name[256] = {0};
  X_RETURN_IF_ERROR(cuda_status(d->cuDeviceGetName(name, sizeof name - 1, dev), "cuDeviceGetName"));
  size_t total = 0, free_b = 0, total2 = 0;
  X_RETURN_IF_ERROR(cuda_status(d->cuDeviceTotalMem(&total, dev), "cuDeviceTotalMem"));
  X_RETURN_IF_ERROR(cuda_status(d->cuMemGetInfo(&free_b, &total2), "cuMemGetInfo"));
  int major = 0, minor = 0, sms = 0, vmm = 0;
  d->cuDeviceGetAttribute(&major, cuda::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
  d->cuDeviceGetAttribute(&minor, cuda::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
  d->cuDeviceGetAttribute(&sms, cuda::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
  d->cuDeviceGetAttribute(&vmm, cuda::CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev);
  *out = CudaDeviceInfo{device, name, total, free_b, major, minor, sms, vmm != 0};
  return Status::Ok();
}

bool kernels_compiled_in() {
#if X_HAVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

const char* kernel_architectures() {
#if X_HAVE_CUDA_KERNELS
  return X_CORE_KERNEL_ARCHS;
#else
  return "";
#endif
}

namespace {
Status load_module(int device, DeviceSlot** out) {
#if X_HAVE_CUDA_KERNELS
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  X_RETURN_IF_ERROR(use_device(device));
  DeviceSlot& slot = slots()[device];
  std::call_once(slot.module_once, [&] {
    slot.module_status =
        cuda_status(d->cuModuleLoadData(&slot.module, x_core_fatbin), "cuModuleLoadData");
    if (!slot.module_status.ok()) return;
    slot.module_status = cuda_status(
        d->cuModuleGetFunction(&slot.delay_fn, slot.module, "x_delay_kernel"), "cuModuleGetFunction");
    if (!slot.module_status.ok()) return;
    slot.module_status = cuda_status(
        d->cuModuleGetFunction(&slot.fill64_fn, slot.module, "x_fill64_kernel"),
        "cuModuleGetFunction");
  });
  X_RETURN_IF_ERROR(slot.module_status);
  *out = &slot;
  return Status::Ok();
#else
  (void)device;
  (void)out;
  return Status::Error(Code::kNoDevice,
                       "this build of @x/core has no CUDA kernels (nvcc was not found at build time)");
#endif
}
}  // namespace

Status launch_delay(int device, cuda::CUstream stream, uint64_t ns) {
  DeviceSlot* slot = nullptr;
  X_RETURN_IF_ERROR(load_module(device, &slot));
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  void* args[] = {&ns};
  return cuda_status(d->cuLaunchKernel(slot->delay_fn, 1, 1, 1, 1, 1, 1, 0, stream, args, nullptr),
                     "cuLaunchKernel(x_delay_kernel)");
}

Status launch_fill64(int device, cuda::CUstream stream, uint64_t dst, uint64_t count,
                     uint64_t pattern) {
  if (count == 0) return Status::Ok();
  DeviceSlot* slot = nullptr;
  X_RETURN_IF_ERROR(load_module(device, &slot));
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  unsigned threads = 256;
  uint64_t blocks64 = (count + threads - 1) / threads;
  unsigned blocks = static_cast<unsigned>(blocks64 > 65535u * 16u ? 65535u * 16u : blocks64);
  void* args[] = {&dst, &count, &pattern};
  return cuda_status(
      d->cuLaunchKernel(slot->fill64_fn, blocks, 1, 1, threads, 1, 1, 0, stream, args, nullptr),
      "cuLaunchKernel(x_fill64_kernel)");
}

}  // namespace x
