// CUDA streams and events over the driver API (opened at run time).
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "device.h"
#include "graph.h"
#include "registry.h"
#include "stream.h"

namespace x {
namespace {

using Clock = std::chrono::steady_clock;

struct HostCall {
  x_host_fn fn;
  x_cleanup_fn cleanup;
  void* user;
};

struct WaiterCall {
  Waiter waiter;
};

void run_waiter(void* p) {
  auto* w = static_cast<WaiterCall*>(p);
  w->waiter(Status::Ok());
  delete w;
}

// Polls an event without blocking a thread inside the driver, so the wait can time out.
Status poll_event(const cuda::Driver* d, cuda::CUevent ev, int64_t timeout_ns, const char* what) {
  auto deadline = Clock::now() + std::chrono::nanoseconds(timeout_ns);
  auto sleep = std::chrono::microseconds(5);
  for (;;) {
    cuda::CUresult r = d->cuEventQuery(ev);
    if (r == cuda::CUDA_SUCCESS) return Status::Ok();
    if (r != cuda::CUDA_ERROR_NOT_READY) return cuda_status(r, "cuEventQuery");
    if (Clock::now() >= deadline) {
      return Status::Error(Code::kTimeout, std::string(what) + " did not complete within " +
                                               std::to_string(timeout_ns / 1000000) + " ms");
    }
    std::this_thread::sleep_for(sleep);
    if (sleep < std::chrono::microseconds(500)) sleep *= 2;
  }
}

class CudaEvent final : public Event {
 public:
  CudaEvent(int device, cuda::CUevent ev) : Event(device), ev_(ev) {}
  ~CudaEvent() override {
    const cuda::Driver* d = nullptr;
    if (!driver(&d).ok() || !use_device(device_).ok()) return;
    if (notify_ != nullptr) d->cuStreamDestroy(notify_);
    d->cuEventDestroy(ev_);
  }
  cuda::CUevent handle() const { return ev_; }

  Status query(bool* done) override {
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(driver(&d));
    X_RETURN_IF_ERROR(use_device(device_));
    cuda::CUresult r = d->cuEventQuery(ev_);
    if (r == cuda::CUDA_ERROR_NOT_READY) {
      *done = false;
      return Status::Ok();
    }
    *done = r == cuda::CUDA_SUCCESS;
    return cuda_status(r, "cuEventQuery");
  }
  Status synchronize(int64_t timeout_ns) override {
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(driver(&d));
    X_RETURN_IF_ERROR(use_device(device_));
    return poll_event(d, ev_, timeout_ns, "event");
  }
  // A private stream waits on the event, then a host function reports completion: no thread is
  // blocked and no polling happens while the GPU works.
  void add_waiter(Waiter w) override {
    const cuda::Driver* d = nullptr;
    Status st = driver(&d);
    if (st.ok()) st = use_device(device_);
    if (st.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (notify_ == nullptr) {
        st = cuda_status(d->cuStreamCreate(&notify_, cuda::CU_STREAM_NON_BLOCKING), "cuStreamCreate");
      }
      if (st.ok()) st = cuda_status(d->cuStreamWaitEvent(notify_, ev_, 0), "cuStreamWaitEvent");
      if (st.ok()) {
        auto* call = new WaiterCall{std::move(w)};
        st = cuda_status(d->cuLaunchHostFunc(notify_, run_waiter, call), "cuLaunchHostFunc");
        if (st.ok()) return;
        w = std::move(call->waiter);
        delete call;
      }
    }
    w(st);
  }
  Status elapsed_ms(Event& end, double* ms) override {
    auto* e = dynamic_cast<CudaEvent*>(&end);
    if (e == nullptr || e->device() != device_) {
      return Status::Invalid("elapsedTime: both events must be on the same device");
    }
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(driver(&d));
    X_RETURN_IF_ERROR(use_device(device_));
    float f = 0;
    X_RETURN_IF_ERROR(cuda_status(d->cuEventElapsedTime(&f, ev_, e->ev_), "cuEventElapsedTime"));
    *ms = f;
    return Status::Ok();
  }

 private:
  cuda::CUevent ev_;
  std::mutex mu_;
  cuda::CUstream notify_ = nullptr;
};

void run_host_call(void* p) {
  auto* c = static_cast<HostCall*>(p);
  c->fn(c->user);  // CUDA host functions cannot fail a stream; failures are the callee's to report
  if (c->cleanup != nullptr) c->cleanup(c->user);
  delete c;
}

void run_sleep(void* p) {
  auto* ns = static_cast<uint64_t*>(p);
  std::this_thread::sleep_for(std::chrono::nanoseconds(*ns));
  delete ns;
}

class CudaStream final : public Stream {
 public:
  CudaStream(int device, cuda::CUstream s) : Stream(device), s_(s) {}
  ~CudaStream() override { close(); }

  Status copy(uint64_t dst, uint64_t src, uint64_t bytes) override {
    X_RETURN_IF_ERROR(use_range(dst, bytes, "copy destination"));
    X_RETURN_IF_ERROR(use_range(src, bytes, "copy source"));
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(enter(&d));
    if (bytes == 0) return Status::Ok();
    return cuda_status(d->cuMemcpyAsync(dst, src, bytes, s_), "cuMemcpyAsync");
  }
  Status fill(uint64_t dst, uint64_t bytes, uint64_t pattern, int width) override {
    X_RETURN_IF_ERROR(use_range(dst, bytes, "fill destination"));
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(enter(&d));
    if (bytes == 0) return Status::Ok();
    switch (width) {
      case 1:
        return cuda_status(d->cuMemsetD8Async(dst, static_cast<unsigned char>(pattern), bytes, s_),
                           "cuMemsetD8Async");
      case 2:
        return cuda_status(
            d->cuMemsetD16Async(dst, static_cast<unsigned short>(pattern), bytes / 2, s_),
            "cuMemsetD16Async");
      case 4:
        return cuda_status(d->cuMemsetD32Async(dst, static_cast<unsigned>(pattern), bytes / 4, s_),
                           "cuMemsetD32Async");
      default:
        return launch_fill64(device_, s_, dst, bytes / 8, pattern);
    }
  }
  Status delay(uint64_t ns) override {
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(enter(&d));
    if (kernels_compiled_in()) return launch_delay(device_, s_, ns);
    // Without compiled kernels the stream is held by a sleeping host function instead.
    auto* arg = new uint64_t(ns);
    Status st = cuda_status(d->cuLaunchHostFunc(s_, run_sleep, arg), "cuLaunchHostFunc");
    if (!st.ok()) delete arg;
    return st;
  }
  Status enqueue_host(x_host_fn fn, x_cleanup_fn cleanup, void* user, const char*) override {
    // A captured host node would run at every launch with state this call frees after the first.
    if (capturing()) return capture_refusal("a host function");
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(enter(&d));
    auto* call = new HostCall{fn, cleanup, user};
    Status st = cuda_status(d->cuLaunchHostFunc(s_, run_host_call, call), "cuLaunchHostFunc");
    if (!st.ok()) delete call;
    return st;
  }
  Status record(Event& event) override {
    auto* e = dynamic_cast<CudaEvent*>(&event);
    if (e == nullptr || e->device() != device_) {
      return Status::Invalid("event.record: the event belongs to another device than the stream");
    }
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(enter(&d));
    return cuda_status(d->cuEventRecord(e->handle(), s_), "cuEventRecord");
  }
  Status wait_event(Event& event) override {
    auto* e = dynamic_cast<CudaEvent*>(&event);
    if (e == nullptr) {
      return Status::Invalid("stream.waitEvent: a CUDA stream can only wait on CUDA events");
    }
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(enter(&d));
    return cuda_status(d->cuStreamWaitEvent(s_, e->handle(), 0), "cuStreamWaitEvent");
  }
  Status synchronize(int64_t timeout_ns) override {
    if (capturing()) return capture_refusal("stream.synchronize");
    std::shared_ptr<Event> marker;
    X_RETURN_IF_ERROR(create_cuda_event(device_, false, &marker));
    X_RETURN_IF_ERROR(record(*marker));
    return marker->synchronize(timeout_ns);
  }
  void add_waiter(Waiter w) override {
    if (capturing()) return w(capture_refusal("waiting for the stream"));
    std::shared_ptr<Event> marker;
    Status st = create_cuda_event(device_, false, &marker);
    if (st.ok()) st = record(*marker);
    if (!st.ok()) return w(st);
    // The waiter keeps the marker event alive until it fired.
    marker->add_waiter([marker, w = std::move(w)](Status s) mutable { w(s); });
  }
  void close() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (s_ == nullptr) return;
    const cuda::Driver* d = nullptr;
    if (driver(&d).ok() && use_device(device_).ok()) {
      std::lock_guard<std::mutex> cap(cap_mu_);
      if (capturing_ && d->cuStreamEndCapture != nullptr) {  // an abandoned capture: discard it
        cuda::CUgraph g = nullptr;
        d->cuStreamEndCapture(s_, &g);
        if (g != nullptr && d->cuGraphDestroy != nullptr) d->cuGraphDestroy(g);
        capturing_ = false;
      }
      // cuStreamDestroy returns at once; queued work still completes (CUDA semantics).
      d->cuStreamDestroy(s_);
    }
    s_ = nullptr;
  }
  void* cuda_handle() override { return s_; }

  Status use_range(uint64_t ptr, uint64_t bytes, const char* what) override {
    if (bytes == 0) return Status::Ok();
    {
      std::lock_guard<std::mutex> cap(cap_mu_);
      if (capturing_) return note_range(ptr, bytes, what);
    }
    return check(ptr, bytes, what);
  }

  bool capturing() override {
    std::lock_guard<std::mutex> cap(cap_mu_);
    return capturing_;
  }

  Status begin_capture(int mode) override {
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(enter(&d));
    if (d->cuStreamBeginCapture == nullptr || d->cuStreamEndCapture == nullptr ||
        d->cuGraphInstantiateWithFlags == nullptr || d->cuGraphLaunch == nullptr) {
      return Status::Error(Code::kNoDevice, "this NVIDIA driver lacks CUDA graph entry points (cuStreamBeginCapture_v2, cuGraphInstantiateWithFlags)");
    }
    std::lock_guard<std::mutex> cap(cap_mu_);
    if (capturing_) return Status::Invalid("beginCapture: the stream is already capturing a graph");
    X_RETURN_IF_ERROR(cuda_status(d->cuStreamBeginCapture(s_, mode), "cuStreamBeginCapture"));
    capturing_ = true;
    ranges_.clear();
    seen_.clear();
    return Status::Ok();
  }

  Status end_capture(std::shared_ptr<CudaGraph>* out) override {
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(enter(&d));
    std::vector<GraphRange> ranges;
    cuda::CUgraph graph = nullptr;
    {
      std::lock_guard<std::mutex> cap(cap_mu_);
      if (!capturing_) return Status::Invalid("endCapture: the stream is not capturing a graph");
      capturing_ = false;
      ranges.swap(ranges_);
      seen_.clear();
      cuda::CUresult r = d->cuStreamEndCapture(s_, &graph);
      if (r != cuda::CUDA_SUCCESS) {
        if (graph != nullptr) d->cuGraphDestroy(graph);
        Status st = cuda_status(r, "cuStreamEndCapture");
        if (r == cuda::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED) {
          st.message += ": an operation during the capture was not capturable (e.g. a synchronous "
                        "call or a wait on an event recorded outside the capture)";
        }
        return st;
      }
    }
    size_t nodes = 0;
    if (d->cuGraphGetNodes != nullptr) d->cuGraphGetNodes(graph, nullptr, &nodes);
    cuda::CUgraphExec exec = nullptr;
    cuda::CUresult r = d->cuGraphInstantiateWithFlags(&exec, graph, 0);
    d->cuGraphDestroy(graph);  // the executable graph is independent of its template
    X_RETURN_IF_ERROR(cuda_status(r, "cuGraphInstantiateWithFlags"));
    *out = std::make_shared<CudaGraph>(device_, exec, nodes, std::move(ranges));
    return Status::Ok();
  }

 private:
  static Status capture_refusal(const char* what) {
    return Status::Invalid(std::string(what) +
                           " is not allowed while the stream captures a graph; end the capture first");
  }
  // While capturing (cap_mu_ held): only registered memory, recorded once per registration.
  Status note_range(uint64_t ptr, uint64_t bytes, const char* what) {
    auto& reg = MemoryRegistry::instance();
    RangeInfo r;
    if (!reg.find(device_, ptr, &r) && !reg.find(X_DEVICE_CPU, ptr, &r)) {
      return Status::Invalid(std::string(what) + " " + hex(ptr) +
                             " is not memory x manages; while capturing a graph only persistent "
                             "memory (an @x/cumem allocation or a HostBuffer) may be used, so that "
                             "every launch can check it still exists (DESIGN.md rule 3)");
    }
    X_RETURN_IF_ERROR(reg.check(r.device, ptr, bytes, what, true));
    if (seen_.insert({r.device, r.base}).second) ranges_.push_back({r.device, r.base, r.generation});
    return Status::Ok();
  }

  Status enter(const cuda::Driver** d) {
    if (s_ == nullptr) return Status::Invalid("the stream was disposed; create a new one");
    X_RETURN_IF_ERROR(driver(d));
    return use_device(device_);
  }
  // Memory must be known: a registered range (host buffer, cumem allocation), which must be awake,
  // or memory the driver itself allocated or pinned. An unknown address would be taken by the
  // driver as pageable host memory and copied by the CPU: a segfault for a bad pointer.
  Status check(uint64_t ptr, uint64_t bytes, const char* what) {
    auto& reg = MemoryRegistry::instance();
    // Known but asleep, draining or overrun: refused. Known and fine: accepted.
    X_RETURN_IF_ERROR(reg.check(device_, ptr, bytes, what, false));
    X_RETURN_IF_ERROR(reg.check(X_DEVICE_CPU, ptr, bytes, what, false));
    if (reg.check(device_, ptr, bytes, what, true).ok() || reg.check(X_DEVICE_CPU, ptr, bytes, what, true).ok()) {
      return Status::Ok();
    }
    const cuda::Driver* d = nullptr;
    X_RETURN_IF_ERROR(enter(&d));
    unsigned int type = 0;
    if (d->cuPointerGetAttribute(&type, cuda::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, ptr) == cuda::CUDA_SUCCESS) {
      return Status::Ok();
    }
    return Status::Invalid(std::string(what) + " " + hex(ptr) + " is neither memory x manages nor memory the CUDA driver knows (expected a HostBuffer, an @x/cumem allocation or device memory)");
  }
  std::mutex mu_;
  cuda::CUstream s_;
  std::mutex cap_mu_;  // guards the capture state below
  bool capturing_ = false;
  std::vector<GraphRange> ranges_;
  std::set<std::pair<int, uint64_t>> seen_;
};

}  // namespace

Status create_cuda_stream(int device, std::shared_ptr<Stream>* out) {
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  X_RETURN_IF_ERROR(use_device(device));
  cuda::CUstream s = nullptr;
  X_RETURN_IF_ERROR(cuda_status(d->cuStreamCreate(&s, cuda::CU_STREAM_NON_BLOCKING), "cuStreamCreate"));
  *out = std::make_shared<CudaStream>(device, s);
  return Status::Ok();
}

Status create_cuda_event(int device, bool timing, std::shared_ptr<Event>* out) {
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  X_RETURN_IF_ERROR(use_device(device));
  cuda::CUevent ev = nullptr;
  X_RETURN_IF_ERROR(cuda_status(
      d->cuEventCreate(&ev, timing ? cuda::CU_EVENT_DEFAULT : cuda::CU_EVENT_DISABLE_TIMING),
      "cuEventCreate"));
  *out = std::make_shared<CudaEvent>(device, ev);
  return Status::Ok();
}

Status create_stream(int device, const StreamOptions& opts, std::shared_ptr<Stream>* out) {
  if (device == X_DEVICE_CPU) return create_cpu_stream(opts, out);
  return create_cuda_stream(device, out);
}

Status create_event(int device, bool timing, std::shared_ptr<Event>* out) {
  if (device == X_DEVICE_CPU) return create_cpu_event(out);
  return create_cuda_event(device, timing, out);
}

}  // namespace x
