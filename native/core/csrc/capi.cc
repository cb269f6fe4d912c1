// The C function table (x/core_api.h) over the C++ streams, events and registry.
#include <string>
#include <vector>

#include "handles.h"
#include "registry.h"

namespace x {
namespace {

thread_local std::string t_last_error;

int ok() { return X_SUCCESS; }

const char* api_last_error() { return t_last_error.c_str(); }

int api_stream_device(x_stream* s, int* out) {
  if (s == nullptr || out == nullptr) return set_last_error(Status::Invalid("null stream"));
  *out = s->stream->device();
  return ok();
}

void* api_stream_cuda_handle(x_stream* s) { return s == nullptr ? nullptr : s->stream->cuda_handle(); }

int api_stream_enqueue_host(x_stream* s, x_host_fn fn, x_cleanup_fn cleanup, void* user,
                            const char* label) {
  if (s == nullptr || fn == nullptr) return set_last_error(Status::Invalid("null stream or function"));
  return set_last_error(s->stream->enqueue_host(fn, cleanup, user, label));
}

int api_stream_synchronize(x_stream* s, int64_t timeout_ns) {
  if (s == nullptr) return set_last_error(Status::Invalid("null stream"));
  return set_last_error(s->stream->synchronize(timeout_ns));
}

int api_event_create(int device, x_event** out) {
  if (out == nullptr) return set_last_error(Status::Invalid("null output"));
  std::shared_ptr<Event> e;
  Status st = create_event(device, false, &e);
  if (!st.ok()) return set_last_error(st);
  *out = new x_event{std::move(e)};
  return ok();
}

void api_event_destroy(x_event* e) { delete e; }

int api_event_record(x_event* e, x_stream* s) {
  if (e == nullptr || s == nullptr) return set_last_error(Status::Invalid("null event or stream"));
  return set_last_error(s->stream->record(*e->event));
}

int api_stream_wait_event(x_stream* s, x_event* e) {
  if (e == nullptr || s == nullptr) return set_last_error(Status::Invalid("null event or stream"));
  return set_last_error(s->stream->wait_event(*e->event));
}

int api_event_query(x_event* e, int* done) {
  if (e == nullptr || done == nullptr) return set_last_error(Status::Invalid("null event"));
  bool b = false;
  Status st = e->event->query(&b);
  *done = b ? 1 : 0;
  return set_last_error(st);
}

int api_event_synchronize(x_event* e, int64_t timeout_ns) {
  if (e == nullptr) return set_last_error(Status::Invalid("null event"));
  return set_last_error(e->event->synchronize(timeout_ns));
}

int api_register_range(int device, uint64_t base, uint64_t size, int state, const char* owner) {
  if (state < X_RANGE_UNMAPPED || state > X_RANGE_DRAINING) {
    return set_last_error(Status::Invalid("register_range: unknown state " + std::to_string(state)));
  }
  return set_last_error(MemoryRegistry::instance().add(device, base, size, static_cast<RangeState>(state),
                                                       owner != nullptr ? owner : "external"));
}

int api_set_range_state(int device, uint64_t base, int state) {
  if (state < X_RANGE_UNMAPPED || state > X_RANGE_DRAINING) {
    return set_last_error(Status::Invalid("set_range_state: unknown state " + std::to_string(state)));
  }
  return set_last_error(MemoryRegistry::instance().set_state(device, base, static_cast<RangeState>(state)));
}

int api_unregister_range(int device, uint64_t base) {
  return set_last_error(MemoryRegistry::instance().remove(device, base));
}

int api_check_range(int device, uint64_t ptr, uint64_t size) {
  return set_last_error(MemoryRegistry::instance().check(device, ptr, size, "pointer", true));
}

int api_stream_use_range(x_stream* s, uint64_t ptr, uint64_t bytes, const char* what) {
  if (s == nullptr) return set_last_error(Status::Invalid("null stream"));
  return set_last_error(s->stream->use_range(ptr, bytes, what != nullptr ? what : "pointer"));
}

int api_stream_enqueue_host_ranges(x_stream* s, x_host_fn fn, x_cleanup_fn cleanup, void* user,
                                   const char* label, const x_range* ranges, size_t count) {
  if (s == nullptr || fn == nullptr) return set_last_error(Status::Invalid("null stream or function"));
  if (count > 0 && ranges == nullptr) return set_last_error(Status::Invalid("null ranges"));
  std::vector<RangeRequest> reqs(count);
  for (size_t i = 0; i < count; i++) {
    reqs[i] = RangeRequest{ranges[i].ptr, ranges[i].bytes, ranges[i].what != nullptr ? ranges[i].what : "pointer"};
  }
  return set_last_error(s->stream->enqueue_host_ranges(fn, cleanup, user, label, std::move(reqs)));
}

int api_retire_range(int device, uint64_t base, x_cleanup_fn release, void* user) {
  bool found = MemoryRegistry::instance().retire(device, base, [release, user] {
    if (release != nullptr) release(user);
  });
  if (!found) return set_last_error(Status::Invalid("retire_range: no registered range starts at " + hex(base)));
  return ok();
}

int api_quiesce_range(int device, uint64_t base, int state, int64_t timeout_ns) {
  if (state < X_RANGE_UNMAPPED || state > X_RANGE_DRAINING) {
    return set_last_error(Status::Invalid("quiesce_range: unknown state " + std::to_string(state)));
  }
  return set_last_error(
      MemoryRegistry::instance().quiesce(device, base, static_cast<RangeState>(state), timeout_ns));
}

}  // namespace

int set_last_error(const Status& st) {
  if (st.ok()) return X_SUCCESS;
  t_last_error = st.message;
  return static_cast<int>(st.code);
}

const x_core_api* core_api() {
  static const x_core_api table = {
      X_CORE_API_VERSION,   static_cast<uint32_t>(sizeof(x_core_api)),
      api_last_error,       api_stream_device,
      api_stream_cuda_handle, api_stream_enqueue_host,
      api_stream_synchronize, api_event_create,
      api_event_destroy,    api_event_record,
      api_stream_wait_event, api_event_query,
      api_event_synchronize, api_register_range,
      api_set_range_state,  api_unregister_range,
      api_check_range,      api_stream_use_range,
      api_stream_enqueue_host_ranges, api_retire_range,
      api_quiesce_range,
  };
  return &table;
}

}  // namespace x
