// A captured sequence of CPU kernels, replayed as one stream operation: the CPU analogue of a CUDA
// graph. A decode step enqueues ~100 small kernels; enqueuing each one separately costs a JS call,
// argument marshalling and a hand-off to the stream thread, which on a 2-core machine is more than
// the kernels themselves. Captured once per batch shape, the step is one enqueue.
//
// Replaying uses the arguments of the capture (pointers, sizes), so every buffer a graph touches
// must outlive it (DESIGN.md rule 3) and keep its address (it does: @x/cumem). Data read at run
// time (token ids, positions, block tables in the workspace's staging) may change between launches.
// The ranges a capture checked are kept and checked again at every launch, so a freed buffer or a
// sleeping tag is a typed error, never a fault.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "x/status.h"

namespace x::kernels {

struct GraphOp {
  const char* label;  // static string: the kernel's name
  std::function<Status()> run;
};

// A memory range a captured op uses, as checked at capture.
struct GraphRange {
  uint64_t ptr = 0, bytes = 0;
  std::string name;
};

class CpuGraph {
 public:
  void add(const char* label, std::function<Status()> run) { ops_.push_back({label, std::move(run)}); }

  // Records a range once (a step touches the same workspace rows many times).
  void use(uint64_t ptr, uint64_t bytes, const char* name) {
    for (auto& r : ranges_) {
      if (r.ptr == ptr && r.bytes >= bytes) return;
      if (r.ptr == ptr && r.bytes < bytes) {
        r.bytes = bytes;
        return;
      }
    }
    ranges_.push_back({ptr, bytes, name});
  }

  const std::vector<GraphRange>& ranges() const { return ranges_; }
  size_t size() const { return ops_.size(); }

  // Runs every op in capture order on the calling (stream) thread; stops at the first failure and
  // names the op.
  Status run() const {
    for (size_t i = 0; i < ops_.size(); i++) {
      Status st = ops_[i].run();
      if (!st.ok()) {
        st.message = std::string("graph op ") + std::to_string(i) + " (" + ops_[i].label + "): " + st.message;
        return st;
      }
    }
    return Status::Ok();
  }

 private:
  std::vector<GraphOp> ops_;
  std::vector<GraphRange> ranges_;
};

}  // namespace x::kernels
