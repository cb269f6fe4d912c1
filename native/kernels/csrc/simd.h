// Hot inner loops with an AVX2+FMA version picked at run time (and a portable one), so the addon
// is built once for x86-64 and still uses the vector units where the CPU has them.
#pragma once

#include <cstdint>
#include <cstring>

namespace x::kernels {

// bf16 is the top half of an f32.
inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float load_weight(const void* w, bool bf16, int64_t i) {
  return bf16 ? bf16_to_f32(static_cast<const uint16_t*>(w)[i]) : static_cast<const float*>(w)[i];
}

// sum a[i]*b[i], f32 accumulate.
float dot_f32(const float* a, const float* b, int64_t n);
// y[i] += s * x[i]
void axpy_f32(float* y, float s, const float* x, int64_t n);
// x[i] = exp(x[i] - shift), returns the sum of the results. Relative error below 2e-7 (a Cephes
// polynomial) for arguments in [-87, 0]; smaller arguments give 0.
float exp_shifted_sum(float* x, float shift, int64_t n);

// Attention over one cache block. s[j] = scale * (q · k[j*ld .. +hd]) for j < n.
void block_scores(const float* q, const float* k, int64_t ld, int64_t hd, int64_t n, float scale, float* s);
// acc[d] += sum_j w[j] * v[j*ld + d] for d < hd, j < n.
void block_accumulate(float* acc, const float* w, const float* v, int64_t ld, int64_t hd, int64_t n);

// A tile of out = a · wᵀ: out[i*ldo + j] = sum_k a[i*lda + k] * w[j*ldw + k] for i < mr (≤ 3),
// j < nr (≤ 4). w is f32 or bf16 (`bf16`); accumulation is f32.
void matmul_tile(const float* a, int64_t lda, int mr, const void* w, int64_t ldw, bool bf16, int nr,
                 int64_t k, float* out, int64_t ldo);

// True when the AVX2+FMA paths are in use (reported by the addon for benchmarks).
bool simd_avx2();

}  // namespace x::kernels
