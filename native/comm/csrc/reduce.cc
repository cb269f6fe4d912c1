#include "reduce.h"

#include <algorithm>
#include <cstring>

namespace x::comm {
namespace {

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        exp--;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (absx < 0x38800000u) {  // subnormal or zero in half
    float a;
    std::memcpy(&a, &absx, 4);
    uint32_t m = static_cast<uint32_t>(a * 16777216.0f + 0.5f);  // 2^24: units of the smallest subnormal
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t e = ((absx >> 23) - 127 + 15) << 10;
  uint32_t m = (absx >> 13) & 0x3ffu;
  uint32_t rest = absx & 0x1fffu;
  uint32_t h = e | m;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
  return static_cast<uint16_t>(sign | h);
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

template <typename T>
T apply(ReduceOp op, T a, T b) {
  switch (op) {
    case ReduceOp::kSum: return static_cast<T>(a + b);
    case ReduceOp::kMin: return std::min(a, b);
    case ReduceOp::kMax: return std::max(a, b);
    case ReduceOp::kProd: return static_cast<T>(a * b);
  }
  return a;
}

template <typename T>
ReduceFn typed(ReduceOp op) {
  return [op](void* out, const void* a, const void* b, size_t n) {
    T* o = static_cast<T*>(out);
    const T* x = static_cast<const T*>(a);
    const T* y = static_cast<const T*>(b);
    for (size_t i = 0; i < n; i++) o[i] = apply<T>(op, x[i], y[i]);
  };
}

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
ReduceFn half_like(ReduceOp op) {
  return [op](void* out, const void* a, const void* b, size_t n) {
    uint16_t* o = static_cast<uint16_t*>(out);
    const uint16_t* x = static_cast<const uint16_t*>(a);
    const uint16_t* y = static_cast<const uint16_t*>(b);
    for (size_t i = 0; i < n; i++) o[i] = FromF(apply<float>(op, ToF(x[i]), ToF(y[i])));
  };
}

}  // namespace

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: case DType::kI32: return 4;
    case DType::kF64: case DType::kI64: return 8;
    case DType::kU8: return 1;
    case DType::kF16: case DType::kBF16: return 2;
  }
  return 1;
}

const char* dtype_name(DType t) {
  static const char* names[] = {"f32", "f64", "i32", "i64", "u8", "f16", "bf16"};
  return valid_dtype(static_cast<int>(t)) ? names[static_cast<int>(t)] : "?";
}

const char* reduce_name(ReduceOp op) {
  static const char* names[] = {"sum", "min", "max", "prod"};
  return valid_reduce(static_cast<int>(op)) ? names[static_cast<int>(op)] : "?";
}

bool valid_dtype(int t) { return t >= 0 && t <= 6; }
bool valid_reduce(int op) { return op >= 0 && op <= 3; }

ReduceFn reduce_fn(DType t, ReduceOp op) {
  switch (t) {
    case DType::kF32: return typed<float>(op);
    case DType::kF64: return typed<double>(op);
    case DType::kI32: return typed<int32_t>(op);
    case DType::kI64: return typed<int64_t>(op);
    case DType::kU8: return typed<uint8_t>(op);
    case DType::kF16: return half_like<half_to_float, float_to_half>(op);
    case DType::kBF16: return half_like<bf16_to_float, float_to_bf16>(op);
  }
  return typed<uint8_t>(op);
}

}  // namespace x::comm
