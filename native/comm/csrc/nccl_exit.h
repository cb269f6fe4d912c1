// Process exit with NCCL groups still live (an uncaught exception, process.exit(), groups never
// disposed): see nccl_exit.cc.
#pragma once

#include <memory>

namespace x::comm {

class NcclGroup;

// Remembers `group` for the exit handler (until it is gone). Thread-safe.
void watch_for_exit(std::weak_ptr<NcclGroup> group);
// Registers the exit handler, once per process. Call after NCCL initialized its CUDA runtime (a
// communicator init returned), so that the handler runs before the runtime's own exit handler.
void install_exit_handler();
// True once the exit handler started: the process is ending.
bool process_exiting();

}  // namespace x::comm
