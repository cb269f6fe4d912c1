// CudaGraph: launch with re-checked buffers, and destruction.
#include "device.h"
#include "graph.h"
#include "registry.h"

namespace x {

CudaGraph::~CudaGraph() {
  const cuda::Driver* d = nullptr;
  if (exec_ == nullptr || !driver(&d).ok() || !use_device(device_).ok()) return;
  // In-flight launches finish first: the driver defers the release (like cuStreamDestroy).
  if (d->cuGraphExecDestroy != nullptr) d->cuGraphExecDestroy(exec_);
}

Status CudaGraph::launch(Stream& stream) {
  if (stream.device() != device_) {
    return Status::Invalid("graph.launch: the graph was captured on cuda:" + std::to_string(device_) +
                           " but the stream is on " +
                           (stream.device() < 0 ? std::string("cpu") : "cuda:" + std::to_string(stream.device())));
  }
  if (stream.capturing()) {
    return Status::Invalid("graph.launch: the stream is capturing a graph; launch into a stream that is not");
  }
  auto* s = static_cast<cuda::CUstream>(stream.cuda_handle());
  if (s == nullptr) return Status::Invalid("graph.launch: the stream was disposed; create a new one");
  const auto& reg = MemoryRegistry::instance();
  for (const GraphRange& r : ranges_) {
    X_RETURN_IF_ERROR(reg.check_generation(r.device, r.base, r.generation, "graph.launch"));
  }
  const cuda::Driver* d = nullptr;
  X_RETURN_IF_ERROR(driver(&d));
  X_RETURN_IF_ERROR(use_device(device_));
  return cuda_status(d->cuGraphLaunch(exec_, s), "cuGraphLaunch");
}

}  // namespace x
