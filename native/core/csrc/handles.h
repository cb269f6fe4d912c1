// The objects behind the opaque handles of the C table (and behind JS Stream/Event objects).
#pragma once

#include <memory>

#include "graph.h"
#include "stream.h"
#include "x/core_api.h"

struct x_stream {
  std::shared_ptr<x::Stream> stream;
};
struct x_event {
  std::shared_ptr<x::Event> event;
};
// A JS CudaGraph's native side (not part of the C table).
struct x_graph {
  std::shared_ptr<x::CudaGraph> graph;
};

namespace x {
// The table itself, filled once; its address is what `core.capi()` returns to JS.
const x_core_api* core_api();
// Records `st` as the calling thread's last C-table error and returns its numeric code.
int set_last_error(const Status& st);
}  // namespace x
