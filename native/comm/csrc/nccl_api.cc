#include "nccl_api.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace x::nccl {
namespace {

template <typename F>
bool resolve(void* lib, F& slot, const char* name, std::string* missing) {
  void* p = dlsym(lib, name);
  slot = reinterpret_cast<F>(p);
  if (p == nullptr) *missing += std::string(missing->empty() ? "" : ", ") + name;
  return p != nullptr;
}

}  // namespace

const Load& load() {
  // Leaked on purpose: the watchdog reads it (describe) and may still run while exit() destroys
  // objects with static storage duration. Api is a table of pointers (no destructor).
  static Load& result = *new Load();
  static std::once_flag once;
  std::call_once(once, [] {
    static Api api{};
    const char* override_path = std::getenv("X_NCCL_LIBRARY");
    const bool overridden = override_path != nullptr && *override_path != '\0';
    const char* candidates[] = {overridden ? override_path : "libnccl.so.2", overridden ? nullptr : "libnccl.so"};
    void* lib = nullptr;
    std::string errors;
    for (const char* c : candidates) {
      if (c == nullptr) continue;
      lib = dlopen(c, RTLD_NOW | RTLD_LOCAL);
      if (lib != nullptr) {
        result.library = c;
        break;
      }
      const char* e = dlerror();
      errors += std::string(errors.empty() ? "" : "; ") + (e != nullptr ? e : c);
    }
    if (lib == nullptr) {
      result.library = candidates[0];
      result.why = std::string("NCCL is not installed here: dlopen ") + candidates[0] + " failed (" + errors +
                   ")" + (overridden ? " [X_NCCL_LIBRARY]" : "");
      return;
    }
    std::string missing;
    bool ok = true;
    ok &= resolve(lib, api.ncclGetVersion, "ncclGetVersion", &missing);
    ok &= resolve(lib, api.ncclGetUniqueId, "ncclGetUniqueId", &missing);
    ok &= resolve(lib, api.ncclCommInitRankConfig, "ncclCommInitRankConfig", &missing);
    ok &= resolve(lib, api.ncclCommDestroy, "ncclCommDestroy", &missing);
    ok &= resolve(lib, api.ncclCommAbort, "ncclCommAbort", &missing);
    ok &= resolve(lib, api.ncclCommGetAsyncError, "ncclCommGetAsyncError", &missing);
    ok &= resolve(lib, api.ncclGetErrorString, "ncclGetErrorString", &missing);
    ok &= resolve(lib, api.ncclGetLastError, "ncclGetLastError", &missing);
    ok &= resolve(lib, api.ncclAllReduce, "ncclAllReduce", &missing);
    ok &= resolve(lib, api.ncclBroadcast, "ncclBroadcast", &missing);
    ok &= resolve(lib, api.ncclAllGather, "ncclAllGather", &missing);
    ok &= resolve(lib, api.ncclReduceScatter, "ncclReduceScatter", &missing);
    ok &= resolve(lib, api.ncclSend, "ncclSend", &missing);
    ok &= resolve(lib, api.ncclRecv, "ncclRecv", &missing);
    ok &= resolve(lib, api.ncclGroupStart, "ncclGroupStart", &missing);
    ok &= resolve(lib, api.ncclGroupEnd, "ncclGroupEnd", &missing);
    if (!ok) {
      result.why = result.library + " lacks NCCL entry points x needs (" + missing +
                   "); x needs NCCL 2.17 or newer";
      dlclose(lib);
      return;
    }
    if (api.ncclGetVersion(&result.version) != ncclSuccess || result.version < 21700) {
      result.why = result.library + " is NCCL " + version_string(result.version) + "; x needs 2.17 or newer";
      return;
    }
    result.api = &api;
  });
  return result;
}

std::string version_string(int code) {
  // NCCL_VERSION(X,Y,Z): X*1000+Y*100+Z up to 2.8, X*10000+Y*100+Z from 2.9 on.
  int major = code >= 10000 ? code / 10000 : code / 1000;
  int minor = code >= 10000 ? (code % 10000) / 100 : (code % 1000) / 100;
  int patch = code % 100;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::string describe(ncclResult_t r, const char* call, ncclComm_t comm) {
  const Load& l = load();
  std::string s = std::string(call) + " failed";
  if (l.api == nullptr) return s + " (NCCL unavailable)";
  const char* name = l.api->ncclGetErrorString(r);
  s += std::string(": ") + (name != nullptr ? name : "error " + std::to_string(r));
  const char* last = l.api->ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') s += std::string(" (") + last + ")";
  return s;
}

}  // namespace x::nccl
