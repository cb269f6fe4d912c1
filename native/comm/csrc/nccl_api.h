// NCCL, declared by hand and opened at run time with dlopen (no nccl.h, no link).
//
// Why: the addon must build on machines without CUDA or NCCL and load on machines without a GPU,
// where it reports why NCCL is unavailable. Only the types and entry points x uses are declared.
// ABI: NCCL 2.x (checked against 2.28): ncclUniqueId is 128 bytes; enums are int-sized; the config
// struct is versioned by its `size` and `version` fields, so the 2.17 prefix declared here is read
// correctly by newer libraries (they fill later fields with defaults).
#pragma once

#include <cstddef>
#include <string>

namespace x::nccl {

using ncclComm_t = struct ncclComm*;
using cudaStream_t = struct CUstream_st*;  // the runtime's stream is the driver's CUstream

constexpr size_t kUniqueIdBytes = 128;
struct ncclUniqueId {
  char internal[kUniqueIdBytes];
};

using ncclResult_t = int;
constexpr ncclResult_t ncclSuccess = 0;
constexpr ncclResult_t ncclUnhandledCudaError = 1;
constexpr ncclResult_t ncclSystemError = 2;
constexpr ncclResult_t ncclInternalError = 3;
constexpr ncclResult_t ncclInvalidArgument = 4;
constexpr ncclResult_t ncclInvalidUsage = 5;
constexpr ncclResult_t ncclRemoteError = 6;
constexpr ncclResult_t ncclInProgress = 7;

using ncclDataType_t = int;
constexpr ncclDataType_t ncclUint8 = 1;
constexpr ncclDataType_t ncclInt32 = 2;
constexpr ncclDataType_t ncclInt64 = 4;
constexpr ncclDataType_t ncclFloat16 = 6;
constexpr ncclDataType_t ncclFloat32 = 7;
constexpr ncclDataType_t ncclFloat64 = 8;
constexpr ncclDataType_t ncclBfloat16 = 9;

using ncclRedOp_t = int;
constexpr ncclRedOp_t ncclSum = 0;
constexpr ncclRedOp_t ncclProd = 1;
constexpr ncclRedOp_t ncclMax = 2;
constexpr ncclRedOp_t ncclMin = 3;

constexpr int kConfigUndefInt = -2147483647 - 1;  // NCCL_CONFIG_UNDEF_INT (INT_MIN)
constexpr unsigned kConfigMagic = 0xcafebeef;
constexpr unsigned kConfigVersion = 21700;  // NCCL_VERSION(2, 17, 0): the layout below

// ncclConfig_t as of NCCL 2.17 (a prefix of every later version's).
struct ncclConfig_v21700 {
  size_t size = sizeof(ncclConfig_v21700);
  unsigned magic = kConfigMagic;
  unsigned version = kConfigVersion;
  int blocking = kConfigUndefInt;
  int cgaClusterSize = kConfigUndefInt;
  int minCTAs = kConfigUndefInt;
  int maxCTAs = kConfigUndefInt;
  const char* netName = nullptr;
  int splitShare = kConfigUndefInt;
};

// One pointer per entry point.
struct Api {
  ncclResult_t (*ncclGetVersion)(int*);
  ncclResult_t (*ncclGetUniqueId)(ncclUniqueId*);
  ncclResult_t (*ncclCommInitRankConfig)(ncclComm_t*, int, ncclUniqueId, int, ncclConfig_v21700*);
  ncclResult_t (*ncclCommDestroy)(ncclComm_t);
  ncclResult_t (*ncclCommAbort)(ncclComm_t);
  ncclResult_t (*ncclCommGetAsyncError)(ncclComm_t, ncclResult_t*);
  const char* (*ncclGetErrorString)(ncclResult_t);
  const char* (*ncclGetLastError)(ncclComm_t);
  ncclResult_t (*ncclAllReduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                                cudaStream_t);
  ncclResult_t (*ncclBroadcast)(const void*, void*, size_t, ncclDataType_t, int, ncclComm_t,
                                cudaStream_t);
  ncclResult_t (*ncclAllGather)(const void*, void*, size_t, ncclDataType_t, ncclComm_t,
                                cudaStream_t);
  ncclResult_t (*ncclReduceScatter)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t,
                                    ncclComm_t, cudaStream_t);
  ncclResult_t (*ncclSend)(const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*ncclRecv)(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*ncclGroupStart)();
  ncclResult_t (*ncclGroupEnd)();
};

// The result of opening NCCL once per process: a usable table, or the reason why not.
struct Load {
  const Api* api = nullptr;  // null when unavailable
  std::string library;       // what was opened (or tried)
  std::string why;           // human-readable reason when unavailable
  int version = 0;           // ncclGetVersion, e.g. 22807
};

// Opens libnccl once (thread-safe). X_NCCL_LIBRARY overrides the library path (tests use it to
// point at a missing or wrong library on purpose).
const Load& load();

// "2.28.7" from 22807.
std::string version_string(int code);

// A readable description of a failed call: "ncclAllReduce failed: unhandled system error (...)".
std::string describe(ncclResult_t r, const char* call, ncclComm_t comm);

}  // namespace x::nccl
