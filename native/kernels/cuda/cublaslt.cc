#include "cublaslt.h"

#include <dlfcn.h>

#include <array>
#include <cstdlib>
#include <list>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "params.h"
#include "runtime.h"

namespace x::kernels::gpu {
namespace {

// --- the hand-declared subset of cublasLt.h ---
using cublasStatus_t = int;
using cublasLtHandle_t = struct cublasLtContext*;
using cublasLtMatmulDesc_t = void*;
using cublasLtMatrixLayout_t = void*;
using cublasLtMatmulPreference_t = void*;
struct cublasLtMatmulAlgo_t {
  uint64_t data[8];
};
struct cublasLtMatmulHeuristicResult_t {
  cublasLtMatmulAlgo_t algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
};
constexpr cublasStatus_t CUBLAS_STATUS_SUCCESS = 0;
constexpr int CUBLAS_COMPUTE_32F = 68;
constexpr int CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14;
constexpr int CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
constexpr int CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4;
constexpr int CUBLASLT_MATMUL_DESC_EPILOGUE = 7, CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8;
constexpr uint32_t CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4;
constexpr int CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;
constexpr int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6;
constexpr int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8;

struct Lt {
  cublasStatus_t (*create)(cublasLtHandle_t*);
  size_t (*version)();
  const char* (*status_name)(cublasStatus_t);
  cublasStatus_t (*desc_create)(cublasLtMatmulDesc_t*, int, int);
  cublasStatus_t (*desc_destroy)(cublasLtMatmulDesc_t);
  cublasStatus_t (*desc_set)(cublasLtMatmulDesc_t, int, const void*, size_t);
  cublasStatus_t (*layout_create)(cublasLtMatrixLayout_t*, int, uint64_t, uint64_t, int64_t);
  cublasStatus_t (*layout_destroy)(cublasLtMatrixLayout_t);
  cublasStatus_t (*pref_create)(cublasLtMatmulPreference_t*);
  cublasStatus_t (*pref_destroy)(cublasLtMatmulPreference_t);
  cublasStatus_t (*pref_set)(cublasLtMatmulPreference_t, int, const void*, size_t);
  cublasStatus_t (*heuristic)(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,
                              cublasLtMatmulHeuristicResult_t*, int*);
  cublasStatus_t (*matmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void*, const void*, cublasLtMatrixLayout_t,
                           const void*, cublasLtMatrixLayout_t, const void*, const void*, cublasLtMatrixLayout_t,
                           void*, cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t*, void*, size_t,
                           cuda::CUstream);
};

struct LtLoad {
  Lt lt{};
  bool ok = false;
  std::string library, why;
};

const LtLoad& load_lt() {
  static LtLoad l;
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = std::getenv("X_CUBLASLT");
    const char* candidates[] = {env, "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
    void* lib = nullptr;
    std::string errors;
    for (const char* c : candidates) {
      if (c == nullptr || *c == '\0') continue;
      lib = dlopen(c, RTLD_NOW | RTLD_LOCAL);
      if (lib != nullptr) {
        l.library = c;
        break;
      }
      const char* e = dlerror();
      errors += std::string(errors.empty() ? "" : "; ") + (e != nullptr ? e : c);
    }
    if (lib == nullptr) {
      l.why = "cuBLASLt not found (dlopen libcublasLt.so.13/.12 failed: " + errors +
              "); install the CUDA toolkit's cuBLAS or set X_CUBLASLT=/path/libcublasLt.so";
      return;
    }
    bool ok = true;
    auto sym = [&](auto& slot, const char* name) {
      slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(dlsym(lib, name));
      ok &= slot != nullptr;
    };
    Lt& t = l.lt;
    sym(t.create, "cublasLtCreate");
    sym(t.version, "cublasLtGetVersion");
    sym(t.desc_create, "cublasLtMatmulDescCreate");
    sym(t.desc_destroy, "cublasLtMatmulDescDestroy");
    sym(t.desc_set, "cublasLtMatmulDescSetAttribute");
    sym(t.layout_create, "cublasLtMatrixLayoutCreate");
    sym(t.layout_destroy, "cublasLtMatrixLayoutDestroy");
    sym(t.pref_create, "cublasLtMatmulPreferenceCreate");
    sym(t.pref_destroy, "cublasLtMatmulPreferenceDestroy");
    sym(t.pref_set, "cublasLtMatmulPreferenceSetAttribute");
    sym(t.heuristic, "cublasLtMatmulAlgoGetHeuristic");
    sym(t.matmul, "cublasLtMatmul");
    t.status_name = reinterpret_cast<const char* (*)(cublasStatus_t)>(dlsym(lib, "cublasLtGetStatusName"));
    if (!ok) {
      l.why = l.library + " lacks cuBLASLt entry points x needs";
      return;
    }
    l.ok = true;
  });
  return l;
}

Status lt_status(cublasStatus_t s, const char* op) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  const Lt& t = load_lt().lt;
  const char* name = t.status_name != nullptr ? t.status_name(s) : nullptr;
  Status st = Status::Error(Code::kCuda, std::string(op) + " failed: " + (name ? name : "cublasStatus " + std::to_string(s)));
  st.operation = op;
  return st;
}

int lt_type(int dtype) { return dtype == xk::kF32 ? CUDA_R_32F : dtype == xk::kF16 ? CUDA_R_16F : CUDA_R_16BF; }

// The largest power of two (up to 256) dividing an address.
uint32_t alignment(uint64_t p) {
  uint32_t a = 256;
  while (a > 1 && (p % a) != 0) a >>= 1;
  return a;
}

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, uint32_t, uint32_t, uint32_t,
                       uint32_t, uint64_t>;
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 1469598103934665603ull;
    auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    std::apply([&](auto... v) { (mix(static_cast<uint64_t>(v)), ...); }, k);
    return h;
  }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
};

constexpr size_t kMaxPlans = 4096;  // distinct shapes per device; the oldest is dropped beyond

struct DeviceLt {
  std::once_flag once;
  Status status;
  cublasLtHandle_t handle = nullptr;
  std::mutex mu;  // plans, and the bias pointer set on a cached descriptor just before its matmul
  std::unordered_map<Key, std::list<Plan>::iterator, KeyHash> index;
  std::list<Plan> plans;  // most recently created first
};

std::array<DeviceLt, 64>& devices() {
  static auto* d = new std::array<DeviceLt, 64>();  // lives until process exit
  return *d;
}

void destroy(const Lt& t, Plan& p) {
  if (p.la) t.layout_destroy(p.la);
  if (p.lb) t.layout_destroy(p.lb);
  if (p.ld) t.layout_destroy(p.ld);
  if (p.desc) t.desc_destroy(p.desc);
}

Status make_plan(const Lt& t, cublasLtHandle_t h, const GemmArgs& g, Plan* out) {
  Plan p;
  auto fail = [&](Status st) {
    destroy(t, p);
    return st;
  };
  Status st = lt_status(t.desc_create(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  if (!st.ok()) return fail(st);
  const int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  const uint32_t epi = g.bias != 0 ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  for (auto [attr, ptr, size] : {std::tuple<int, const void*, size_t>{CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta},
                                 {CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb},
                                 {CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi}}) {
    st = lt_status(t.desc_set(p.desc, attr, ptr, size), "cublasLtMatmulDescSetAttribute");
    if (!st.ok()) return fail(st);
  }
  if (g.bias != 0) {
    // The heuristic reads the bias pointer only for its alignment; the real one is set per call.
    st = lt_status(t.desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof g.bias),
                   "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    if (!st.ok()) return fail(st);
  }
  // Column-major view of the row-major problem: Dᵀ[N, M] = (W[N, K])·(A[M, K])ᵀ, i.e.
  // A_lt = w as a K×N column-major matrix (transposed), B_lt = a as K×M, D = out as N×M.
  st = lt_status(t.layout_create(&p.la, lt_type(g.dtype_in), g.k, g.n, g.ld_w), "cublasLtMatrixLayoutCreate(w)");
  if (st.ok()) st = lt_status(t.layout_create(&p.lb, lt_type(g.dtype_in), g.k, g.m, g.ld_a), "cublasLtMatrixLayoutCreate(a)");
  if (st.ok()) st = lt_status(t.layout_create(&p.ld, lt_type(g.dtype_out), g.n, g.m, g.ld_out), "cublasLtMatrixLayoutCreate(out)");
  if (!st.ok()) return fail(st);
  cublasLtMatmulPreference_t pref = nullptr;
  st = lt_status(t.pref_create(&pref), "cublasLtMatmulPreferenceCreate");
  if (!st.ok()) return fail(st);
  const uint64_t ws = g.workspace_bytes;
  const uint32_t al_a = alignment(g.w), al_b = alignment(g.a), al_d = alignment(g.out);
  t.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  t.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
  t.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
  t.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d);
  t.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d);
  cublasLtMatmulHeuristicResult_t res[4] = {};
  int found = 0;
  st = lt_status(t.heuristic(h, p.desc, p.la, p.lb, p.ld, p.ld, pref, 4, res, &found), "cublasLtMatmulAlgoGetHeuristic");
  t.pref_destroy(pref);
  if (!st.ok()) return fail(st);
  for (int i = 0; i < found; i++) {
    if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= ws) {
      p.algo = res[i].algo;
      p.workspace = res[i].workspaceSize;
      *out = p;
      return Status::Ok();
    }
  }
  return fail(Status::Error(Code::kCuda, "cuBLASLt has no algorithm for this matmul (M " + std::to_string(g.m) + ", N " +
                                             std::to_string(g.n) + ", K " + std::to_string(g.k) + ", workspace " +
                                             std::to_string(ws) + " bytes)"));
}

}  // namespace

std::string cublaslt_status(bool* ok) {
  const LtLoad& l = load_lt();
  *ok = l.ok;
  if (!l.ok) return l.why;
  return "cuBLASLt " + std::to_string(l.lt.version()) + " (" + l.library + ")";
}

Status gemm(const GemmArgs& g, cuda::CUstream stream) {
  const LtLoad& l = load_lt();
  if (!l.ok) return Status::Error(Code::kNoDevice, l.why);
  if (g.m == 0 || g.n == 0) return Status::Ok();
  DeviceRuntime* rt = nullptr;
  X_RETURN_IF_ERROR(DeviceRuntime::get(g.device, &rt));
  X_RETURN_IF_ERROR(rt->enter());
  DeviceLt& dl = devices()[g.device];
  std::call_once(dl.once, [&] { dl.status = lt_status(l.lt.create(&dl.handle), "cublasLtCreate"); });
  X_RETURN_IF_ERROR(dl.status);
  const Key key{g.m, g.n, g.k, g.ld_out, g.ld_a, g.ld_w, g.dtype_in, g.dtype_out, alignment(g.w), alignment(g.a),
                alignment(g.out), g.bias != 0 ? alignment(g.bias) : 0u, g.workspace_bytes};
  std::lock_guard<std::mutex> lock(dl.mu);
  auto it = dl.index.find(key);
  if (it == dl.index.end()) {
    Plan p;
    X_RETURN_IF_ERROR(make_plan(l.lt, dl.handle, g, &p));
    if (dl.plans.size() >= kMaxPlans) {
      Plan& old = dl.plans.back();
      for (auto e = dl.index.begin(); e != dl.index.end(); ++e) {
        if (&*e->second == &old) {
          dl.index.erase(e);
          break;
        }
      }
      destroy(l.lt, old);
      dl.plans.pop_back();
    }
    dl.plans.push_front(p);
    it = dl.index.emplace(key, dl.plans.begin()).first;
  }
  Plan& p = *it->second;
  if (g.bias != 0) {
    X_RETURN_IF_ERROR(lt_status(l.lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof g.bias),
                                "cublasLtMatmulDescSetAttribute(BIAS_POINTER)"));
  }
  const float alpha = 1.0f, beta = 0.0f;
  return lt_status(l.lt.matmul(dl.handle, p.desc, &alpha, reinterpret_cast<const void*>(g.w), p.la,
                               reinterpret_cast<const void*>(g.a), p.lb, &beta, reinterpret_cast<const void*>(g.out),
                               p.ld, reinterpret_cast<void*>(g.out), p.ld, &p.algo,
                               reinterpret_cast<void*>(g.workspace), p.workspace, stream),
                   "cublasLtMatmul");
}

}  // namespace x::kernels::gpu
