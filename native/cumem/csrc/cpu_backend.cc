// CPU backend: the address range is reserved with mmap(PROT_NONE); mapping replaces part of it with
// fresh read-write anonymous pages (MAP_FIXED) and unmapping replaces them again with PROT_NONE, so
// the pages go back to the kernel (resident memory really drops) while the address stays reserved.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "backend.h"

namespace x::cumem {
namespace {

Status os_error(const char* op, uint64_t bytes) {
  Code c = errno == ENOMEM ? Code::kOutOfMemory : Code::kInternal;
  return Status::Error(c, std::string(op) + " of " + std::to_string(bytes) + " bytes failed: " +
                              std::strerror(errno));
}

class CpuBackend final : public Backend {
 public:
  int device() const override { return -1; }
  uint64_t granularity() const override { return static_cast<uint64_t>(sysconf(_SC_PAGESIZE)); }

  Status reserve(uint64_t bytes, uint64_t* va) override {
    void* p = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return os_error("mmap(PROT_NONE) reserve", bytes);
    *va = reinterpret_cast<uint64_t>(p);
    return Status::Ok();
  }
  Status release(uint64_t va, uint64_t bytes) override {
    if (munmap(reinterpret_cast<void*>(va), bytes) != 0) return os_error("munmap", bytes);
    return Status::Ok();
  }
  Status map(uint64_t va, uint64_t bytes, Physical*) override {
    void* p = mmap(reinterpret_cast<void*>(va), bytes, PROT_READ | PROT_WRITE,
                   MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return os_error("mmap(MAP_FIXED) map", bytes);
    return Status::Ok();
  }
  Status unmap(uint64_t va, uint64_t bytes, const Physical&) override {
    void* p = mmap(reinterpret_cast<void*>(va), bytes, PROT_NONE,
                   MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return os_error("mmap(PROT_NONE) unmap", bytes);
    return Status::Ok();
  }
  Status host_alloc(uint64_t bytes, void** out) override {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return os_error("host backup allocation", bytes);
    *out = p;
    return Status::Ok();
  }
  void host_free(void* p, uint64_t bytes) override { munmap(p, bytes); }
  Status to_host(void* dst, uint64_t src_va, uint64_t bytes) override {
    std::memcpy(dst, reinterpret_cast<const void*>(src_va), bytes);
    return Status::Ok();
  }
  Status from_host(uint64_t dst_va, const void* src, uint64_t bytes) override {
    std::memcpy(reinterpret_cast<void*>(dst_va), src, bytes);
    return Status::Ok();
  }
  Status fill(uint64_t va, uint64_t bytes, uint8_t value) override {
    std::memset(reinterpret_cast<void*>(va), value, bytes);
    return Status::Ok();
  }
  Status sync_copies() override { return Status::Ok(); }
  Status quiesce() override { return Status::Ok(); }  // CPU streams are synchronized by the caller
};

}  // namespace

Status make_cpu_backend(std::unique_ptr<Backend>* out) {
  *out = std::make_unique<CpuBackend>();
  return Status::Ok();
}

}  // namespace x::cumem
