// The CUDA half of the @x/kernels binding (cuda_binding.cc), registered by addon.cc's Init.
#pragma once

#include <napi.h>

#include "x/core_api.h"

namespace x::kernels::binding {

// The @x/core C table handed to init(); throws if init() was not called.
const x_core_api* core_api(Napi::Env env);

void register_cuda(Napi::Env env, Napi::Object exports);

}  // namespace x::kernels::binding
