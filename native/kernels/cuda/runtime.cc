#include "runtime.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <utility>
#include <vector>

namespace x::kernels::gpu {

#if X_HAVE_CUDA_KERNELS
extern "C" const unsigned char x_kernels_fatbin_elementwise[];
extern "C" const unsigned char x_kernels_fatbin_attention_prefill[];
extern "C" const unsigned char x_kernels_fatbin_attention_decode[];
extern "C" const unsigned char x_kernels_fatbin_sampling[];
extern "C" const unsigned char x_kernels_fatbin_gemv[];
#endif

namespace {

constexpr int kMaxDevices = 64;

struct Module {
  const unsigned char* image;
  std::vector<const char*> functions;
  std::vector<const char*> big_smem;  // functions that need more than 48 KiB of dynamic smem
};

std::vector<Module> modules() {
#if X_HAVE_CUDA_KERNELS
  static const std::vector<std::string>* names = [] {
    auto* v = new std::vector<std::string>();
    for (const char* dt : {"bf16", "f16"}) {
      for (const char* k : {"embedding_%s_v", "embedding_%s_s", "rms_norm_%s_w1", "rms_norm_%s_w2",
                            "rms_norm_%s_w4", "rms_norm_%s_b4", "rms_norm_%s_b8", "rms_norm_%s_s",
                            "rotary_%s_v", "rotary_%s_s", "silu_and_mul_%s_v", "silu_and_mul_%s_s",
                            "cache_write_%s_v", "cache_write_%s_s"}) {
        char buf[64];
        std::snprintf(buf, sizeof buf, k, dt);
        v->push_back(std::string("x_") + buf);
      }
    }
    return v;
  }();
  static const std::vector<std::string>* gemv_names = [] {
    auto* v = new std::vector<std::string>();
    for (const char* dt : {"bf16", "f16"}) {
      for (const char* kind : {"m", "n"}) {
        for (int m = 1; m <= xk::kGemvMaxRows; m++) v->push_back(std::string("x_gemv_") + dt + "_" + kind + std::to_string(m));
      }
    }
    return v;
  }();
  Module gemv{x_kernels_fatbin_gemv, {}, {}};
  for (const auto& n : *gemv_names) {
    gemv.functions.push_back(n.c_str());
    if (n.find("_n") != std::string::npos) gemv.big_smem.push_back(n.c_str());  // x rows staged in smem
  }
  Module ew{x_kernels_fatbin_elementwise, {"x_index_copy_u32", "x_copy_indexed_u32"}, {}};
  for (const auto& n : *names) ew.functions.push_back(n.c_str());
  return {
      ew,
      {x_kernels_fatbin_attention_prefill,
       {"x_attn_prefill_bf16_64", "x_attn_prefill_bf16_128", "x_attn_prefill_f16_64", "x_attn_prefill_f16_128"},
       {"x_attn_prefill_bf16_64", "x_attn_prefill_bf16_128", "x_attn_prefill_f16_64", "x_attn_prefill_f16_128"}},
      {x_kernels_fatbin_attention_decode,
       {"x_attn_decode_bf16_64", "x_attn_decode_bf16_128", "x_attn_decode_f16_64", "x_attn_decode_f16_128",
        "x_attn_decode_lean_bf16_64", "x_attn_decode_lean_bf16_128", "x_attn_decode_lean_f16_64",
        "x_attn_decode_lean_f16_128", "x_attn_combine_bf16", "x_attn_combine_f16", "x_attn_generic_bf16",
        "x_attn_generic_f16"},
       {"x_attn_decode_bf16_64", "x_attn_decode_bf16_128", "x_attn_decode_f16_64", "x_attn_decode_f16_128"}},
      {x_kernels_fatbin_sampling,
       {"x_sample_f32", "x_sample_bf16", "x_sample_f16", "x_sample_stats_f32", "x_sample_stats_bf16",
        "x_sample_stats_f16"},
       {}},
      gemv,
  };
#else
  return {};
#endif
}

struct Slot {
  std::once_flag once;
  Status status;
  DeviceRuntime rt;
};

std::array<Slot, kMaxDevices>& slots() {
  static auto* s = new std::array<Slot, kMaxDevices>();  // lives until process exit (used by streams)
  return *s;
}

}  // namespace

bool kernels_compiled_in() {
#if X_HAVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

const char* kernel_architectures() { return kernels_compiled_in() ? "sm_80,sm_90a,compute_90" : ""; }

bool stream_capturing(const cuda::Driver* d, cuda::CUstream stream) {
  if (d->cuStreamIsCapturing == nullptr) return false;
  int status = cuda::CU_STREAM_CAPTURE_STATUS_NONE;
  if (d->cuStreamIsCapturing(stream, &status) != cuda::CUDA_SUCCESS) return false;
  return status != cuda::CU_STREAM_CAPTURE_STATUS_NONE;
}

Status DeviceRuntime::get(int device, DeviceRuntime** out) {
  if (device < 0 || device >= kMaxDevices) {
    return Status::Error(Code::kNoDevice, "cuda:" + std::to_string(device) + " is not a CUDA device index");
  }
  Slot& s = slots()[device];
  std::call_once(s.once, [&] { s.status = s.rt.init(device); });
  X_RETURN_IF_ERROR(s.status);
  *out = &s.rt;
  return Status::Ok();
}

Status DeviceRuntime::enter() const { return cuda_status(d_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent"); }

Status DeviceRuntime::init(int device) {
  const cuda::DriverLoad& l = cuda::load_driver();
  if (l.driver == nullptr) return Status::Error(Code::kNoDevice, "CUDA is unavailable: " + l.why);
  d_ = l.driver;
  device_ = device;
  int n = 0;
  X_CUDA_CHECK(d_->cuDeviceGetCount(&n));
  if (device >= n) {
    return Status::Error(Code::kNoDevice, "cuda:" + std::to_string(device) + " does not exist (this machine has " +
                                              std::to_string(n) + " CUDA device(s))");
  }
  cuda::CUdevice dev = 0;
  X_CUDA_CHECK(d_->cuDeviceGet(&dev, device));
  X_CUDA_CHECK(d_->cuDevicePrimaryCtxRetain(&ctx_, dev));
  X_RETURN_IF_ERROR(enter());
  d_->cuDeviceGetAttribute(&sms_, cuda::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
  d_->cuDeviceGetAttribute(&max_smem_optin_, cuda::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev);
  int per_sm = 0;
  d_->cuDeviceGetAttribute(&per_sm, cuda::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, dev);
  d_->cuDeviceGetAttribute(&smem_reserved_, cuda::CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK, dev);
  smem_per_sm_ = static_cast<uint64_t>(std::max(per_sm, 0));
  // The batch-1 decode chain's carveout (decode_carveout): 64 KiB, or none where the device has no
  // more (the configurations below it leave L1 the rest of the 256 KiB).
  static const int64_t decode_env = [] {
    const char* v = std::getenv("X_KERNELS_DECODE_CARVEOUT");
    return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 10) : int64_t{-2};
  }();
  if (decode_env >= -1) {
    decode_carveout_ = static_cast<int>(std::min<int64_t>(decode_env, 100));
  } else if (smem_per_sm_ > 64 * 1024) {
    decode_carveout_ = carveout_for(64 * 1024);
  }
  int major = 0;
  d_->cuDeviceGetAttribute(&major, cuda::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
  const char* pdl_env = std::getenv("X_KERNELS_PDL");
  pdl_ = major >= 9 && d_->cuLaunchKernelEx != nullptr && !(pdl_env != nullptr && std::string(pdl_env) == "0");
  // X_KERNELS_CARVEOUT="<name prefix>=<percent>,..." (a tuning knob): the preferred shared-memory
  // carveout of the kernels whose names start with a prefix, in percent of the maximum (a launch's
  // own carveout, see decode_carveout, takes precedence).
  std::vector<std::pair<std::string, int>> carveouts;
  if (const char* env = std::getenv("X_KERNELS_CARVEOUT")) {
    std::string spec(env);
    size_t at = 0;
    while (at < spec.size()) {
      size_t comma = spec.find(',', at);
      if (comma == std::string::npos) comma = spec.size();
      const std::string item = spec.substr(at, comma - at);
      const size_t eq = item.find('=');
      if (eq != std::string::npos) carveouts.emplace_back(item.substr(0, eq), std::atoi(item.c_str() + eq + 1));
      at = comma + 1;
    }
  }
  for (const Module& m : modules()) {
    cuda::CUmodule mod = nullptr;
    X_RETURN_IF_ERROR(cuda_status(d_->cuModuleLoadData(&mod, m.image), "cuModuleLoadData(@x/kernels)"));
    modules_.push_back(mod);
    for (const char* name : m.functions) {
      cuda::CUfunction f = nullptr;
      Status st = cuda_status(d_->cuModuleGetFunction(&f, mod, name), "cuModuleGetFunction");
      if (!st.ok()) {
        st.message += std::string(" (") + name + ")";
        return st;
      }
      fns_[name] = f;
      // Static shared memory, read once: the opt-in limit below and block_smem need it.
      int static_bytes = 0;
      if (d_->cuFuncGetAttribute != nullptr) {
        X_CUDA_CHECK(d_->cuFuncGetAttribute(&static_bytes, cuda::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, f));
      }
      static_smem_[name] = std::max(static_bytes, 0);
      for (const auto& [prefix, percent] : carveouts) {
        if (std::string(name).rfind(prefix, 0) == 0 && d_->cuFuncSetAttribute != nullptr) {
          d_->cuFuncSetAttribute(f, cuda::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, percent);
        }
      }
    }
    for (const char* name : m.big_smem) {
      if (d_->cuFuncSetAttribute == nullptr) {
        return Status::Error(Code::kNoDevice, "this NVIDIA driver lacks cuFuncSetAttribute");
      }
      // The opt-in limit covers static and dynamic shared memory together.
      const int static_bytes = static_smem_[name];
      Status st = cuda_status(d_->cuFuncSetAttribute(fns_[name], cuda::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                     max_smem_optin_ - static_bytes),
                              "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
      if (!st.ok()) {
        st.message += std::string(" (") + name + ", " + std::to_string(max_smem_optin_ - static_bytes) + " bytes)";
        return st;
      }
    }
  }
  // The error word: device memory the kernels write with atomics, and a pinned host slot it is
  // copied into. Both live as long as the process (graphs capture the device address).
  cuda::CUdeviceptr dev_word = 0;
  X_CUDA_CHECK(d_->cuMemAlloc(&dev_word, sizeof(xk::ErrorWord)));
  err_dev_ = dev_word;
  void* host = nullptr;
  X_CUDA_CHECK(d_->cuMemHostAlloc(&host, sizeof(xk::ErrorWord), cuda::CU_MEMHOSTALLOC_PORTABLE));
  err_host_ = static_cast<xk::ErrorWord*>(host);
  *err_host_ = xk::ErrorWord{};
  // Cleared through a private stream (never the legacy default stream), synchronized here once.
  cuda::CUstream s = nullptr;
  X_CUDA_CHECK(d_->cuStreamCreate(&s, cuda::CU_STREAM_NON_BLOCKING));
  cuda::CUresult r = d_->cuMemsetD8Async(err_dev_, 0, sizeof(xk::ErrorWord), s);
  if (r == cuda::CUDA_SUCCESS) r = d_->cuStreamSynchronize(s);
  d_->cuStreamDestroy(s);
  return cuda_status(r, "cuMemsetD8Async(error word)");
}

int DeviceRuntime::resident_blocks(const char* name, unsigned block, unsigned smem) const {
  const std::string key = std::string(name) + "/" + std::to_string(block) + "/" + std::to_string(smem);
  std::lock_guard<std::mutex> lock(occ_mu_);
  auto hit = occupancy_.find(key);
  if (hit != occupancy_.end()) return hit->second;
  int n = 1;
  auto it = fns_.find(name);
  if (it != fns_.end() && d_->cuOccupancyMaxActiveBlocksPerMultiprocessor != nullptr && enter().ok()) {
    if (d_->cuOccupancyMaxActiveBlocksPerMultiprocessor(&n, it->second, static_cast<int>(block), smem) !=
            cuda::CUDA_SUCCESS ||
        n < 1) {
      n = 1;
    }
  }
  occupancy_[key] = n;
  return n;
}

uint64_t DeviceRuntime::block_smem(const char* name, unsigned smem) const {
  auto it = static_smem_.find(name);
  const uint64_t static_bytes = it != static_smem_.end() ? static_cast<uint64_t>(it->second) : 0;
  return static_bytes + smem + static_cast<uint64_t>(std::max(smem_reserved_, 0));
}

int DeviceRuntime::carveout_for(uint64_t bytes) const {
  if (smem_per_sm_ == 0) return -1;
  // The configurations of sm_80 / sm_90 multiprocessors (KiB); the driver rounds a percentage up to
  // the next one the device has, so the percentage of the smallest that holds `bytes` is enough.
  constexpr uint64_t kConfigs[] = {0, 8, 16, 32, 64, 100, 132, 164, 196, 228};
  uint64_t cfg = smem_per_sm_;
  for (uint64_t c : kConfigs) {
    if (c * 1024 >= bytes) {
      cfg = std::min(c * 1024, smem_per_sm_);
      break;
    }
  }
  return static_cast<int>(cfg * 100 / smem_per_sm_);
}

Status DeviceRuntime::launch(const char* name, Dim3 grid, Dim3 block, unsigned smem, cuda::CUstream stream,
                             void* args, bool pdl, int carveout) const {
  auto it = fns_.find(name);
  if (it == fns_.end()) {
    if (!kernels_compiled_in()) {
      return Status::Error(Code::kNoDevice,
                           "this build of @x/kernels has no CUDA kernels (nvcc was not found at build time; rebuild "
                           "with nvcc on the PATH or under /usr/local/cuda)");
    }
    return Status::Error(Code::kInternal, std::string("@x/kernels has no kernel named ") + name);
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return Status::Ok();
  X_RETURN_IF_ERROR(enter());
  void* params[] = {args};
  const bool with_pdl = pdl && pdl_, with_carveout = carveout >= 0 && d_->cuLaunchKernelEx != nullptr;
  if (with_pdl || with_carveout) {
    cuda::CUlaunchAttribute attrs[2]{};
    unsigned n = 0;
    if (with_pdl) {
      attrs[n].id = cuda::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
      attrs[n++].value.programmatic_stream_serialization_allowed = 1;
    }
    if (with_carveout) {
      attrs[n].id = cuda::CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT;
      attrs[n++].value.shared_mem_carveout = static_cast<unsigned>(carveout);
    }
    cuda::CUlaunchConfig cfg{grid.x, grid.y, grid.z, block.x, block.y, block.z, smem, stream, attrs, n};
    Status st = cuda_status(d_->cuLaunchKernelEx(&cfg, it->second, params, nullptr), "cuLaunchKernelEx");
    if (!st.ok()) st.message += std::string(" (") + name + ")";
    return st;
  }
  Status st = cuda_status(
      d_->cuLaunchKernel(it->second, grid.x, grid.y, grid.z, block.x, block.y, block.z, smem, stream, params, nullptr),
      "cuLaunchKernel");
  if (!st.ok()) st.message += std::string(" (") + name + ")";
  return st;
}

Status DeviceRuntime::fetch_errors(cuda::CUstream stream) const {
  X_RETURN_IF_ERROR(enter());
  X_CUDA_CHECK(d_->cuMemcpyAsync(reinterpret_cast<cuda::CUdeviceptr>(err_host_), err_dev_, sizeof(xk::ErrorWord), stream));
  return cuda_status(d_->cuMemsetD8Async(err_dev_, 0, sizeof(xk::ErrorWord), stream), "cuMemsetD8Async(error word)");
}

}  // namespace x::kernels::gpu
