/* The C function table exported by @x/core's addon.
 *
 * Other addons (@x/cumem, @x/comm, @x/kernels, user addons) reach x's streams, events and the host
 * memory registry through this table instead of linking against @x/core. The JS side hands the
 * table's address to the other addon (`core.capi()` -> bigint), the way NumPy passes its C API in a
 * capsule. Rules:
 *   - `version` is bumped when an entry changes meaning; entries are only ever appended, and `size`
 *     tells a newer caller how many entries an older core provides.
 *   - every function returns 0 on success or an x_status code; `last_error()` then describes the
 *     failure on the calling thread.
 *   - handles are opaque; `x_stream` / `x_event` are the addresses JS exposes as
 *     `stream.nativeHandle` / `event.nativeHandle`.
 *   - host functions enqueued on a stream run on that stream's thread (CPU) or on the driver's
 *     callback thread (CUDA) and must not call CUDA or block on other streams.
 * Pure C so that any toolchain can include it.
 */
#ifndef X_CORE_API_H
#define X_CORE_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define X_CORE_API_VERSION 1u

typedef struct x_stream x_stream;
typedef struct x_event x_event;

/* Status codes (the numeric values of x::Code). */
enum {
  X_SUCCESS = 0,
  X_ERR_INVALID_ARGUMENT = 1,
  X_ERR_CUDA = 2,
  X_ERR_NO_DEVICE = 3,
  X_ERR_OUT_OF_MEMORY = 4,
  X_ERR_ASLEEP = 5,
  X_ERR_TIMEOUT = 6,
  X_ERR_INTERNAL = 7,
  X_ERR_STREAM = 8
};

/* Device index used in this table: -1 is the CPU, 0..N-1 are CUDA devices. */
#define X_DEVICE_CPU (-1)

/* A host function run in stream order. Returning non-zero marks the stream failed; the failure is
 * reported by the stream's next synchronize (and by events recorded after it). */
typedef int (*x_host_fn)(void* user_data);
/* Called exactly once after the host function ran or was dropped (stream shut down). */
typedef void (*x_cleanup_fn)(void* user_data);

/* States of a registered memory range. DRAINING: a sleep is quiescing the range: work already
 * enqueued may still touch it, new work is refused with X_ERR_ASLEEP. */
enum { X_RANGE_UNMAPPED = 0, X_RANGE_MAPPED = 1, X_RANGE_DRAINING = 2 };

/* A memory range a host function reads or writes (stream_enqueue_host_ranges). */
typedef struct x_range {
  uint64_t ptr;
  uint64_t bytes;
  const char* what; /* names the argument in error messages; copied */
} x_range;

typedef struct x_core_api {
  uint32_t version; /* X_CORE_API_VERSION of the core that filled the table */
  uint32_t size;    /* sizeof(x_core_api) of that core */

  const char* (*last_error)(void);

  /* Streams */
  int (*stream_device)(x_stream* stream, int* device_out);
  /* The CUstream of a CUDA stream, or NULL for a CPU stream. */
  void* (*stream_cuda_handle)(x_stream* stream);
  int (*stream_enqueue_host)(x_stream* stream, x_host_fn fn, x_cleanup_fn cleanup, void* user_data,
                             const char* label);
  int (*stream_synchronize)(x_stream* stream, int64_t timeout_ns);

  /* Events. An event belongs to one device; it is recorded on and waited by streams of that device.
   */
  int (*event_create)(int device, x_event** out);
  void (*event_destroy)(x_event* event);
  int (*event_record)(x_event* event, x_stream* stream);
  int (*stream_wait_event)(x_stream* stream, x_event* event);
  int (*event_query)(x_event* event, int* done_out);
  int (*event_synchronize)(x_event* event, int64_t timeout_ns);

  /* The memory registry: ranges of memory x manages, so that stream operations on the CPU can
   * refuse unknown or sleeping memory with an error instead of faulting. @x/cumem registers its
   * allocations here and flips them to X_RANGE_UNMAPPED while asleep. */
  int (*register_range)(int device, uint64_t base, uint64_t size, int state, const char* owner);
  int (*set_range_state)(int device, uint64_t base, int state);
  /* Waits up to 10 s for CPU stream operations still running on the range, then unregisters it;
   * X_ERR_TIMEOUT if one still runs (do not release the memory then). retire_range never blocks. */
  int (*unregister_range)(int device, uint64_t base);
  /* X_SUCCESS when [ptr, ptr+size) lies inside one mapped range; X_ERR_ASLEEP when inside an unmapped
   * or draining one; X_ERR_INVALID_ARGUMENT when x does not know the memory. */
  int (*check_range)(int device, uint64_t ptr, uint64_t size);

  /* Appended (check `size`): declares that work the caller is about to enqueue on `stream` reads
   * or writes [ptr, ptr+bytes), and checks that it may. Memory x manages must be awake
   * (X_ERR_ASLEEP otherwise); CPU streams accept only memory x manages; CUDA streams also accept
   * memory the driver knows, except while the stream captures a graph: then only registered
   * (persistent) memory is accepted, and the registration is recorded so every launch of the graph
   * re-checks it (DESIGN.md rule 3). `what` names the argument in error messages. */
  int (*stream_use_range)(x_stream* stream, uint64_t ptr, uint64_t bytes, const char* what);

  /* Appended: as stream_enqueue_host, for a function that reads or writes `ranges` (`count` of
   * them), each checked now as by stream_use_range. On a CPU stream they are checked again when the
   * function is about to run and held while it runs: memory released meanwhile (retire_range, a
   * disposed HostBuffer, a worker thread torn down) goes back only after the function returned; if a
   * range was freed or put to sleep before the function started, it is not run — `cleanup` is still
   * called once and the stream fails with the reason. */
  int (*stream_enqueue_host_ranges)(x_stream* stream, x_host_fn fn, x_cleanup_fn cleanup, void* user_data,
                                    const char* label, const x_range* ranges, size_t count);
  /* Appended: unregisters a range whose memory the caller is about to release, without blocking.
   * Stream work that has not started yet and names the range fails instead of running.
   * `release(user)` is called exactly once: before this returns when no stream operation runs on
   * the range, otherwise by the thread that finishes the last one; release the memory only there.
   * X_ERR_INVALID_ARGUMENT (and `release` is not called) when no range starts at `base`. */
  int (*retire_range)(int device, uint64_t base, x_cleanup_fn release, void* user);
  /* Appended: before unmapping a range that stays registered (sleep): sets `state`
   * (X_RANGE_UNMAPPED) so that no stream operation starts on it any more, then waits up to
   * `timeout_ns` for those running on it. X_ERR_TIMEOUT if one still runs: do not unmap then. */
  int (*quiesce_range)(int device, uint64_t base, int state, int64_t timeout_ns);
} x_core_api;

#ifdef __cplusplus
}
#endif

#endif /* X_CORE_API_H */
