// Element types and reductions of @x/comm collectives. Codes match packages/comm/src/native.ts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace x::comm {

enum class DType : int { kF32 = 0, kF64 = 1, kI32 = 2, kI64 = 3, kU8 = 4, kF16 = 5, kBF16 = 6 };
enum class ReduceOp : int { kSum = 0, kMin = 1, kMax = 2, kProd = 3 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* reduce_name(ReduceOp op);
bool valid_dtype(int t);
bool valid_reduce(int op);

// out[i] = a[i] (op) b[i] for n elements; f16/bf16 reduce in f32 and round to nearest even.
using ReduceFn = std::function<void(void*, const void*, const void*, size_t)>;
ReduceFn reduce_fn(DType t, ReduceOp op);

}  // namespace x::comm
