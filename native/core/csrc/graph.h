// CUDA graphs captured from an x stream (cuStreamBeginCapture/EndCapture, instantiated once).
//
// A graph replays device work with the arguments it was captured with, so every buffer it touches
// must outlive it (DESIGN.md rule 3). During capture, CudaStream::use_range accepts only memory in
// the registry (cumem allocations, host buffers) and records each registration it touched; every
// launch re-checks them, so a freed buffer or a sleeping tag is a typed error instead of an illegal
// address on the GPU. Because @x/cumem keeps addresses across sleep/wake, a graph stays valid over
// a sleep/wake cycle.
#pragma once

#include <cstdint>
#include <vector>

#include "stream.h"
#include "x/cuda_driver.h"

namespace x {

// One registration (device, base, generation) a captured graph uses.
struct GraphRange {
  int device = 0;
  uint64_t base = 0;
  uint64_t generation = 0;
};

class CudaGraph {
 public:
  CudaGraph(int device, cuda::CUgraphExec exec, size_t nodes, std::vector<GraphRange> ranges)
      : device_(device), exec_(exec), nodes_(nodes), ranges_(std::move(ranges)) {}
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  int device() const { return device_; }
  size_t nodes() const { return nodes_; }
  size_t ranges() const { return ranges_.size(); }
  // Checks every recorded range, then enqueues the whole graph on `stream` (same device).
  Status launch(Stream& stream);

 private:
  int device_;
  cuda::CUgraphExec exec_;
  size_t nodes_;
  std::vector<GraphRange> ranges_;
};

}  // namespace x
