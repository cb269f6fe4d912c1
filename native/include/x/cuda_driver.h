// CUDA driver API, declared by hand and opened at run time with dlopen.
//
// Why: every x addon must build on a machine with no CUDA toolkit and load on a machine with no
// driver (it then reports why CUDA is unavailable). Only the handful of types and entry points x
// uses are declared here; their ABI is stable across CUDA 11–13. Versioned symbols (`_v2`) are
// resolved by their exported names, exactly as cuda.h's #defines map them.
#pragma once

#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>

namespace x::cuda {

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st*;
using CUstream = struct CUstream_st*;
using CUevent = struct CUevent_st*;
using CUmodule = struct CUmod_st*;
using CUfunction = struct CUfunc_st*;
using CUmemGenericAllocationHandle = unsigned long long;
using CUhostFn = void (*)(void* user_data);
using CUgraph = struct CUgraph_st*;
using CUgraphExec = struct CUgraphExec_st*;
using CUgraphNode = struct CUgraphNode_st*;

constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_OUT_OF_MEMORY = 2;
constexpr CUresult CUDA_ERROR_NOT_READY = 600;
constexpr CUresult CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901;

// Stream capture (CUDA graphs). Modes of cuStreamBeginCapture_v2; statuses of cuStreamIsCapturing.
constexpr int CU_STREAM_CAPTURE_MODE_GLOBAL = 0;
constexpr int CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;
constexpr int CU_STREAM_CAPTURE_MODE_RELAXED = 2;
constexpr int CU_STREAM_CAPTURE_STATUS_NONE = 0;
constexpr int CU_STREAM_CAPTURE_STATUS_ACTIVE = 1;
constexpr int CU_STREAM_CAPTURE_STATUS_INVALIDATED = 2;

// CUfunction_attribute: a kernel's static shared memory; raising its dynamic limit above 48 KiB.
constexpr int CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1;
constexpr int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
constexpr int CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT = 9;

constexpr unsigned CU_STREAM_NON_BLOCKING = 0x1;
constexpr unsigned CU_EVENT_DEFAULT = 0x0;
constexpr unsigned CU_EVENT_DISABLE_TIMING = 0x2;
constexpr unsigned CU_MEMHOSTALLOC_PORTABLE = 0x1;
constexpr unsigned CU_MEMHOSTALLOC_DEVICEMAP = 0x2;

// CUdevice_attribute values used by x.
constexpr int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
constexpr int CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33;
constexpr int CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR = 81;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
constexpr int CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK = 111;
constexpr int CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102;
constexpr int CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2;

// Virtual memory management (used by @x/cumem).
enum CUmemAllocationType { CU_MEM_ALLOCATION_TYPE_PINNED = 0x1 };
enum CUmemLocationType { CU_MEM_LOCATION_TYPE_DEVICE = 0x1 };
enum CUmemAllocationHandleType { CU_MEM_HANDLE_TYPE_NONE = 0x0 };
enum CUmemAccess_flags { CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 0x3 };
enum CUmemAllocationGranularity_flags {
  CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0x0,
  CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 0x1
};
struct CUmemLocation {
  CUmemLocationType type;
  int id;
};
struct CUmemAllocationProp {
  CUmemAllocationType type;
  CUmemAllocationHandleType requestedHandleTypes;
  CUmemLocation location;
  void* win32HandleMetaData;
  struct {
    unsigned char compressionType;
    unsigned char gpuDirectRDMACapable;
    unsigned short usage;
    unsigned char reserved[4];
  } allocFlags;
};
struct CUmemAccessDesc {
  CUmemLocation location;
  CUmemAccess_flags flags;
};

// cuLaunchKernelEx's configuration (cuda.h's CUlaunchConfig / CUlaunchAttribute layout).
constexpr int CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;
constexpr int CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT = 14;
struct CUlaunchAttribute {
  int id;
  char pad[4];
  union {
    char bytes[64];
    int programmatic_stream_serialization_allowed;
    unsigned shared_mem_carveout;
  } value;
};
struct CUlaunchConfig {
  unsigned grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_mem_bytes;
  CUstream stream;
  CUlaunchAttribute* attrs;
  unsigned num_attrs;
};
static_assert(sizeof(CUlaunchAttribute) == 72, "CUlaunchAttribute layout");
static_assert(sizeof(CUlaunchConfig) == 56, "CUlaunchConfig layout");

// One pointer per entry point. A null pointer means the installed driver lacks the symbol.
struct Driver {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuDriverGetVersion)(int*);
  CUresult (*cuGetErrorName)(CUresult, const char**);
  CUresult (*cuGetErrorString)(CUresult, const char**);
  CUresult (*cuDeviceGetCount)(int*);
  CUresult (*cuDeviceGet)(CUdevice*, int);
  CUresult (*cuDeviceGetName)(char*, int, CUdevice);
  CUresult (*cuDeviceTotalMem)(size_t*, CUdevice);
  CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice);
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuCtxGetCurrent)(CUcontext*);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuMemGetInfo)(size_t*, size_t*);
  CUresult (*cuStreamCreate)(CUstream*, unsigned);
  CUresult (*cuStreamDestroy)(CUstream);
  CUresult (*cuStreamSynchronize)(CUstream);
  CUresult (*cuStreamQuery)(CUstream);
  CUresult (*cuStreamWaitEvent)(CUstream, CUevent, unsigned);
  CUresult (*cuLaunchHostFunc)(CUstream, CUhostFn, void*);
  CUresult (*cuEventCreate)(CUevent*, unsigned);
  CUresult (*cuEventDestroy)(CUevent);
  CUresult (*cuEventRecord)(CUevent, CUstream);
  CUresult (*cuEventQuery)(CUevent);
  CUresult (*cuEventSynchronize)(CUevent);
  CUresult (*cuEventElapsedTime)(float*, CUevent, CUevent);
  CUresult (*cuMemAlloc)(CUdeviceptr*, size_t);
  CUresult (*cuMemFree)(CUdeviceptr);
  CUresult (*cuMemHostAlloc)(void**, size_t, unsigned);
  CUresult (*cuMemFreeHost)(void*);
  CUresult (*cuMemcpyAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
  CUresult (*cuMemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
  CUresult (*cuMemsetD16Async)(CUdeviceptr, unsigned short, size_t, CUstream);
  CUresult (*cuMemsetD32Async)(CUdeviceptr, unsigned, size_t, CUstream);
  CUresult (*cuModuleLoadData)(CUmodule*, const void*);
  CUresult (*cuModuleUnload)(CUmodule);
  CUresult (*cuModuleGetFunction)(CUfunction*, CUmodule, const char*);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, CUstream, void**, void**);
  CUresult (*cuMemAddressReserve)(CUdeviceptr*, size_t, size_t, CUdeviceptr, unsigned long long);
  CUresult (*cuMemAddressFree)(CUdeviceptr, size_t);
  CUresult (*cuMemCreate)(CUmemGenericAllocationHandle*, size_t, const CUmemAllocationProp*,
                          unsigned long long);
  CUresult (*cuMemRelease)(CUmemGenericAllocationHandle);
  CUresult (*cuMemMap)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                       unsigned long long);
  CUresult (*cuMemUnmap)(CUdeviceptr, size_t);
  CUresult (*cuMemSetAccess)(CUdeviceptr, size_t, const CUmemAccessDesc*, size_t);
  CUresult (*cuMemGetAllocationGranularity)(size_t*, const CUmemAllocationProp*,
                                            CUmemAllocationGranularity_flags);
  CUresult (*cuPointerGetAttribute)(void*, int, CUdeviceptr);
  // Optional entry points (null when the driver lacks them; users check before calling).
  CUresult (*cuStreamBeginCapture)(CUstream, int mode);  // cuStreamBeginCapture_v2
  CUresult (*cuStreamEndCapture)(CUstream, CUgraph*);
  CUresult (*cuStreamIsCapturing)(CUstream, int* status);
  CUresult (*cuGraphInstantiateWithFlags)(CUgraphExec*, CUgraph, unsigned long long);
  CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
  CUresult (*cuGraphExecDestroy)(CUgraphExec);
  CUresult (*cuGraphDestroy)(CUgraph);
  CUresult (*cuGraphGetNodes)(CUgraph, CUgraphNode*, size_t*);
  CUresult (*cuFuncSetAttribute)(CUfunction, int, int);
  CUresult (*cuFuncGetAttribute)(int*, int, CUfunction);
  CUresult (*cuLaunchKernelEx)(const CUlaunchConfig*, CUfunction, void**, void**);
  CUresult (*cuOccupancyMaxActiveBlocksPerMultiprocessor)(int*, CUfunction, int, size_t);
};

// The result of opening the driver once per process: either a usable table or the reason why not.
struct DriverLoad {
  const Driver* driver = nullptr;  // null when unavailable
  std::string library;             // the path that was opened
  std::string why;                 // human-readable reason when unavailable
  int version = 0;                 // cuDriverGetVersion, e.g. 13000
};

namespace detail {
template <typename F>
inline bool resolve(void* lib, F& slot, const char* name, const char* alt = nullptr) {
  void* p = dlsym(lib, name);
  if (p == nullptr && alt != nullptr) p = dlsym(lib, alt);
  slot = reinterpret_cast<F>(p);
  return p != nullptr;
}
}  // namespace detail

// Opens libcuda once (thread-safe). X_CUDA_DRIVER overrides the library path; X_DISABLE_CUDA=1
// pretends there is no driver (for tests of the CPU-only paths on a GPU host).
inline const DriverLoad& load_driver() {
  // Never destroyed: threads that outlive exit()'s static destructors (stream threads, watchdogs)
  // may still read it.
  static DriverLoad& load = *new DriverLoad();
  static std::once_flag once;
  std::call_once(once, [] {
    static Driver d{};
    const char* disabled = std::getenv("X_DISABLE_CUDA");
    if (disabled != nullptr && std::string(disabled) == "1") {
      load.why = "CUDA disabled by X_DISABLE_CUDA=1";
      return;
    }
    const char* override_path = std::getenv("X_CUDA_DRIVER");
    const char* candidates[] = {override_path, "libcuda.so.1", "libcuda.so"};
    void* lib = nullptr;
    std::string errors;
    for (const char* c : candidates) {
      if (c == nullptr || *c == '\0') continue;
      lib = dlopen(c, RTLD_NOW | RTLD_LOCAL);
      if (lib != nullptr) {
        load.library = c;
        break;
      }
      const char* e = dlerror();
      errors += std::string(errors.empty() ? "" : "; ") + (e ? e : c);
    }
    if (lib == nullptr) {
      load.why = "no NVIDIA driver found (dlopen libcuda.so.1 failed: " + errors + ")";
      return;
    }
    using detail::resolve;
    bool ok = true;
    ok &= resolve(lib, d.cuInit, "cuInit");
    ok &= resolve(lib, d.cuDriverGetVersion, "cuDriverGetVersion");
    ok &= resolve(lib, d.cuGetErrorName, "cuGetErrorName");
    ok &= resolve(lib, d.cuGetErrorString, "cuGetErrorString");
    ok &= resolve(lib, d.cuDeviceGetCount, "cuDeviceGetCount");
    ok &= resolve(lib, d.cuDeviceGet, "cuDeviceGet");
    ok &= resolve(lib, d.cuDeviceGetName, "cuDeviceGetName");
    ok &= resolve(lib, d.cuDeviceTotalMem, "cuDeviceTotalMem_v2");
    ok &= resolve(lib, d.cuDeviceGetAttribute, "cuDeviceGetAttribute");
    ok &= resolve(lib, d.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    ok &= resolve(lib, d.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    ok &= resolve(lib, d.cuCtxSetCurrent, "cuCtxSetCurrent");
    ok &= resolve(lib, d.cuCtxGetCurrent, "cuCtxGetCurrent");
    ok &= resolve(lib, d.cuCtxSynchronize, "cuCtxSynchronize");
    ok &= resolve(lib, d.cuMemGetInfo, "cuMemGetInfo_v2");
    ok &= resolve(lib, d.cuStreamCreate, "cuStreamCreate");
    ok &= resolve(lib, d.cuStreamDestroy, "cuStreamDestroy_v2");
    ok &= resolve(lib, d.cuStreamSynchronize, "cuStreamSynchronize");
    ok &= resolve(lib, d.cuStreamQuery, "cuStreamQuery");
    ok &= resolve(lib, d.cuStreamWaitEvent, "cuStreamWaitEvent");
    ok &= resolve(lib, d.cuLaunchHostFunc, "cuLaunchHostFunc");
    ok &= resolve(lib, d.cuEventCreate, "cuEventCreate");
    ok &= resolve(lib, d.cuEventDestroy, "cuEventDestroy_v2");
    ok &= resolve(lib, d.cuEventRecord, "cuEventRecord");
    ok &= resolve(lib, d.cuEventQuery, "cuEventQuery");
    ok &= resolve(lib, d.cuEventSynchronize, "cuEventSynchronize");
    ok &= resolve(lib, d.cuEventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime");
    ok &= resolve(lib, d.cuMemAlloc, "cuMemAlloc_v2");
    ok &= resolve(lib, d.cuMemFree, "cuMemFree_v2");
    ok &= resolve(lib, d.cuMemHostAlloc, "cuMemHostAlloc");
    ok &= resolve(lib, d.cuMemFreeHost, "cuMemFreeHost");
    ok &= resolve(lib, d.cuMemcpyAsync, "cuMemcpyAsync");
    ok &= resolve(lib, d.cuMemsetD8Async, "cuMemsetD8Async");
    ok &= resolve(lib, d.cuMemsetD16Async, "cuMemsetD16Async");
    ok &= resolve(lib, d.cuMemsetD32Async, "cuMemsetD32Async");
    ok &= resolve(lib, d.cuModuleLoadData, "cuModuleLoadData");
    ok &= resolve(lib, d.cuModuleUnload, "cuModuleUnload");
    ok &= resolve(lib, d.cuModuleGetFunction, "cuModuleGetFunction");
    ok &= resolve(lib, d.cuLaunchKernel, "cuLaunchKernel");
    ok &= resolve(lib, d.cuMemAddressReserve, "cuMemAddressReserve");
    ok &= resolve(lib, d.cuMemAddressFree, "cuMemAddressFree");
    ok &= resolve(lib, d.cuMemCreate, "cuMemCreate");
    ok &= resolve(lib, d.cuMemRelease, "cuMemRelease");
    ok &= resolve(lib, d.cuMemMap, "cuMemMap");
    ok &= resolve(lib, d.cuMemUnmap, "cuMemUnmap");
    ok &= resolve(lib, d.cuMemSetAccess, "cuMemSetAccess");
    ok &= resolve(lib, d.cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity");
    ok &= resolve(lib, d.cuPointerGetAttribute, "cuPointerGetAttribute");
    resolve(lib, d.cuStreamBeginCapture, "cuStreamBeginCapture_v2");
    resolve(lib, d.cuStreamEndCapture, "cuStreamEndCapture");
    resolve(lib, d.cuStreamIsCapturing, "cuStreamIsCapturing");
    resolve(lib, d.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags");
    resolve(lib, d.cuGraphLaunch, "cuGraphLaunch");
    resolve(lib, d.cuGraphExecDestroy, "cuGraphExecDestroy");
    resolve(lib, d.cuGraphDestroy, "cuGraphDestroy");
    resolve(lib, d.cuGraphGetNodes, "cuGraphGetNodes");
    resolve(lib, d.cuFuncSetAttribute, "cuFuncSetAttribute");
    resolve(lib, d.cuFuncGetAttribute, "cuFuncGetAttribute");
    resolve(lib, d.cuLaunchKernelEx, "cuLaunchKernelEx");
    resolve(lib, d.cuOccupancyMaxActiveBlocksPerMultiprocessor, "cuOccupancyMaxActiveBlocksPerMultiprocessor");
    if (!ok) {
      load.why = std::string("the NVIDIA driver in ") + load.library +
                 " lacks entry points x needs (driver too old?)";
      return;
    }
    CUresult r = d.cuInit(0);
    if (r != CUDA_SUCCESS) {
      const char* name = nullptr;
      d.cuGetErrorName(r, &name);
      load.why = std::string("cuInit failed: ") + (name ? name : "unknown error") +
                 " (no usable GPU, or the driver and device do not match)";
      return;
    }
    d.cuDriverGetVersion(&load.version);
    load.driver = &d;
  });
  return load;
}

inline std::string error_name(CUresult r) {
  const DriverLoad& l = load_driver();
  const char* name = nullptr;
  if (l.driver != nullptr) l.driver->cuGetErrorName(r, &name);
  return name != nullptr ? name : ("CUresult " + std::to_string(r));
}

inline std::string error_string(CUresult r) {
  const DriverLoad& l = load_driver();
  const char* s = nullptr;
  if (l.driver != nullptr) l.driver->cuGetErrorString(r, &s);
  return s != nullptr ? s : "";
}

}  // namespace x::cuda
