// Streams and events with one set of semantics on the CPU and on CUDA.
//
// A Stream is an in-order queue of device work. Enqueue calls return at once; completion is observed
// through Events. There is no default or current stream anywhere: every operation names its stream.
// CPU streams run their queue on a dedicated native thread; CUDA streams wrap a non-blocking
// CUstream on the device's primary context.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "registry.h"
#include "x/core_api.h"
#include "x/status.h"

namespace x {

class Event;
class CudaGraph;

// Called once when the awaited work completed (ok) or failed; may run on any thread.
using Waiter = std::function<void(Status)>;

class Stream {
 public:
  virtual ~Stream() = default;
  int device() const { return device_; }  // -1 for the CPU

  virtual Status copy(uint64_t dst, uint64_t src, uint64_t bytes) = 0;
  // Writes `bytes` bytes at dst with a repeated pattern of `width` bytes (1, 2, 4 or 8).
  virtual Status fill(uint64_t dst, uint64_t bytes, uint64_t pattern, int width) = 0;
  // Occupies the stream for `ns` nanoseconds (testing, pacing).
  virtual Status delay(uint64_t ns) = 0;
  virtual Status enqueue_host(x_host_fn fn, x_cleanup_fn cleanup, void* user, const char* label) = 0;
  // A host function that reads or writes `ranges`: each is checked now (use_range). CPU streams
  // also hold them while the function runs (their memory is not released under it) and cancel the
  // function (cleanup only, the stream fails) if one was freed or put to sleep before it ran.
  virtual Status enqueue_host_ranges(x_host_fn fn, x_cleanup_fn cleanup, void* user, const char* label,
                                     std::vector<RangeRequest> ranges) {
    for (const RangeRequest& r : ranges) X_RETURN_IF_ERROR(use_range(r.ptr, r.bytes, r.what.c_str()));
    return enqueue_host(fn, cleanup, user, label);
  }
  virtual Status record(Event& event) = 0;
  virtual Status wait_event(Event& event) = 0;
  // Blocks the calling native thread until all work enqueued so far finished, or the timeout.
  // Reports (and clears) the first failure of work on the stream since the last synchronize.
  virtual Status synchronize(int64_t timeout_ns) = 0;
  // Calls `w` when all work enqueued so far finished; never blocks the caller.
  virtual void add_waiter(Waiter w) = 0;
  // Stops accepting work; queued work still runs. Called by dispose and by the GC finalizer.
  virtual void close() = 0;
  // Drops queued work and waits up to `timeout_ms` for in-flight work (environment teardown).
  virtual void stop_and_join(int timeout_ms) { (void)timeout_ms; }
  virtual void* cuda_handle() { return nullptr; }
  // Declares that work about to be enqueued on this stream reads or writes [ptr, ptr+bytes), and
  // checks that it may: memory x manages must be awake; CPU streams accept only memory x manages;
  // CUDA streams also accept memory the driver knows, except while capturing a graph, when only
  // registered (persistent) memory is accepted and the range is recorded so that every launch of
  // the graph re-checks it (DESIGN.md rule 3).
  virtual Status use_range(uint64_t ptr, uint64_t bytes, const char* what) = 0;
  // Graph capture (CUDA streams; `mode` is a CU_STREAM_CAPTURE_MODE_*). CPU streams refuse.
  virtual Status begin_capture(int mode) {
    (void)mode;
    return Status::Invalid("graph capture needs a CUDA stream; received a CPU stream");
  }
  virtual Status end_capture(std::shared_ptr<CudaGraph>* out) {
    (void)out;
    return Status::Invalid("graph capture needs a CUDA stream; received a CPU stream");
  }
  virtual bool capturing() { return false; }
  // Labels of the last completed operations, oldest first (CPU streams with recording on).
  virtual std::vector<std::string> completed_ops() { return {}; }

 protected:
  explicit Stream(int device) : device_(device) {}
  int device_;
};

class Event {
 public:
  virtual ~Event() = default;
  int device() const { return device_; }
  virtual Status query(bool* done) = 0;
  virtual Status synchronize(int64_t timeout_ns) = 0;
  virtual void add_waiter(Waiter w) = 0;
  // Milliseconds between this event and `end` (both recorded, created with timing).
  virtual Status elapsed_ms(Event& end, double* ms) = 0;

 protected:
  explicit Event(int device) : device_(device) {}
  int device_;
};

struct StreamOptions {
  bool record_ops = false;  // keep a log of completed operation labels (CPU only)
};

Status create_stream(int device, const StreamOptions& opts, std::shared_ptr<Stream>* out);
Status create_event(int device, bool timing, std::shared_ptr<Event>* out);

Status create_cpu_stream(const StreamOptions& opts, std::shared_ptr<Stream>* out);
Status create_cpu_event(std::shared_ptr<Event>* out);
Status create_cuda_stream(int device, std::shared_ptr<Stream>* out);
Status create_cuda_event(int device, bool timing, std::shared_ptr<Event>* out);

}  // namespace x
