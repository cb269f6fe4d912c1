// A kernel timeline for benchmarks: LD_PRELOAD this library and set X_CUPTI_TRACE=<file>; every
// kernel the process runs (graph replays included) is appended to <file> as one CSV line
//   start_ns,end_ns,graph_id,graph_node_id,correlation_id,stream_id,grid,block,smem,regs,name
// and every memory copy as one with grid and block 0x0x0 and name memcpy_<kind>_<bytes>.
// Concurrent-kernel activity does not serialize kernels, so programmatic dependent launch and
// overlap stay as they are (a kernel's start is when its first block starts, before it waits).
// Records are flushed by a background thread every 100 ms and once more at exit.
// Build: tools/cupti-trace/build.sh (needs the CUDA toolkit's CUPTI; no GPU).
// Read: node tools/cupti-trace/report.mjs <file>.
#include <cupti.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace {

FILE* g_out = nullptr;
std::atomic<bool> g_stop{false};
std::thread* g_flusher = nullptr;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  constexpr size_t kBytes = 8u << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBytes));
  *size = *buffer != nullptr ? kBytes : 0;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      // Copies as rows of their own: no grid, named memcpy_<kind>_<bytes> (kind 1 = HtoD, 2 = DtoH,
      // 8 = DtoD, as CUpti_ActivityMemcpyKind).
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
      std::fprintf(g_out, "%llu,%llu,%u,%llu,%u,%u,0x0x0,0x0x0,0,0,memcpy_%u_%llu\n",
                   static_cast<unsigned long long>(m->start), static_cast<unsigned long long>(m->end), m->graphId,
                   static_cast<unsigned long long>(m->graphNodeId), m->correlationId, m->streamId,
                   static_cast<unsigned>(m->copyKind), static_cast<unsigned long long>(m->bytes));
      continue;
    }
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    std::fprintf(g_out, "%llu,%llu,%u,%llu,%u,%u,%dx%dx%d,%dx%dx%d,%d,%u,%s\n",
                 static_cast<unsigned long long>(k->start), static_cast<unsigned long long>(k->end), k->graphId,
                 static_cast<unsigned long long>(k->graphNodeId), k->correlationId, k->streamId, k->gridX, k->gridY,
                 k->gridZ, k->blockX, k->blockY, k->blockZ, k->staticSharedMemory + k->dynamicSharedMemory,
                 static_cast<unsigned>(k->registersPerThread), k->name != nullptr ? k->name : "?");
  }
  std::fflush(g_out);
  std::free(buffer);
}

void report(const char* what, CUptiResult r) {
  if (r == CUPTI_SUCCESS) return;
  const char* msg = nullptr;
  cuptiGetResultString(r, &msg);
  std::fprintf(stderr, "cupti-trace: %s failed: %s\n", what, msg != nullptr ? msg : "?");
}

__attribute__((constructor)) void start() {
  const char* path = std::getenv("X_CUPTI_TRACE");
  if (path == nullptr || *path == '\0') return;
  g_out = std::fopen(path, "w");
  if (g_out == nullptr) {
    std::fprintf(stderr, "cupti-trace: cannot open %s\n", path);
    return;
  }
  report("cuptiActivityRegisterCallbacks", cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
  report("cuptiActivityEnable", cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  report("cuptiActivityEnable(memcpy)", cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY));
  g_flusher = new std::thread([] {
    while (!g_stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      cuptiActivityFlushAll(0);
    }
  });
}

__attribute__((destructor)) void finish() {
  if (g_out == nullptr) return;
  g_stop.store(true);
  if (g_flusher != nullptr) g_flusher->join();
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::fclose(g_out);
  g_out = nullptr;
}

}  // namespace
