#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace x::kernels {
namespace {

float dot_f32_scalar(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // eight lanes, like the vector version
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
  }
  float s = 0;
  for (int l = 0; l < 8; l++) s += acc[l];
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

void axpy_scalar(float* y, float s, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += s * x[i];
}

template <int MR, int NR>
void tile_scalar(const float* a, int64_t lda, const void* w, int64_t ldw, bool bf16, int64_t k, float* out,
                 int64_t ldo) {
  for (int i = 0; i < MR; i++) {
    for (int j = 0; j < NR; j++) {
      float s = 0;
      if (bf16) {
        const uint16_t* wr = static_cast<const uint16_t*>(w) + j * ldw;
        for (int64_t kk = 0; kk < k; kk++) s += a[i * lda + kk] * bf16_to_f32(wr[kk]);
      } else {
        s = dot_f32_scalar(a + i * lda, static_cast<const float*>(w) + j * ldw, k);
      }
      out[i * ldo + j] = s;
    }
  }
}

#if defined(__x86_64__)
#define X_AVX2 __attribute__((target("avx2,fma")))

X_AVX2 inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 sums = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, sums);
  sums = _mm_add_ss(sums, sh);
  return _mm_cvtss_f32(sums);
}

X_AVX2 inline __m256 load8_bf16(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

X_AVX2 float dot_f32_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

X_AVX2 void axpy_avx2(float* y, float s, const float* x, int64_t n) {
  __m256 vs = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vs, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; i++) y[i] += s * x[i];
}

// MR rows of a against NR rows of w, 8 lanes of k at a time; MR*NR accumulators stay in registers.
template <int MR, int NR, bool BF16>
X_AVX2 void tile_avx2(const float* a, int64_t lda, const void* w, int64_t ldw, int64_t k, float* out,
                      int64_t ldo) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
  int64_t kk = 0;
  for (; kk + 8 <= k; kk += 8) {
    __m256 av[MR];
    for (int i = 0; i < MR; i++) av[i] = _mm256_loadu_ps(a + i * lda + kk);
    for (int j = 0; j < NR; j++) {
      // Stream the rows after this tile's into cache ahead of use (the next tile reads them).
      _mm_prefetch(reinterpret_cast<const char*>(w) + ((j + NR) * ldw + kk) * (BF16 ? 2 : 4) + 256, _MM_HINT_T0);
      __m256 wv = BF16 ? load8_bf16(static_cast<const uint16_t*>(w) + j * ldw + kk)
                       : _mm256_loadu_ps(static_cast<const float*>(w) + j * ldw + kk);
      for (int i = 0; i < MR; i++) acc[i][j] = _mm256_fmadd_ps(av[i], wv, acc[i][j]);
    }
  }
  for (int i = 0; i < MR; i++) {
    for (int j = 0; j < NR; j++) {
      float s = hsum(acc[i][j]);
      for (int64_t t = kk; t < k; t++) {
        float wt = BF16 ? bf16_to_f32(static_cast<const uint16_t*>(w)[j * ldw + t])
                        : static_cast<const float*>(w)[j * ldw + t];
        s += a[i * lda + t] * wt;
      }
      out[i * ldo + j] = s;
    }
  }
}

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
bool cpu_has_avx2() { return false; }
#endif

const bool kAvx2 = cpu_has_avx2();

template <int MR, int NR>
void tile_dispatch(const float* a, int64_t lda, const void* w, int64_t ldw, bool bf16, int64_t k, float* out,
                   int64_t ldo) {
#if defined(__x86_64__)
  if (kAvx2) {
    if (bf16) {
      tile_avx2<MR, NR, true>(a, lda, w, ldw, k, out, ldo);
    } else {
      tile_avx2<MR, NR, false>(a, lda, w, ldw, k, out, ldo);
    }
    return;
  }
#endif
  tile_scalar<MR, NR>(a, lda, w, ldw, bf16, k, out, ldo);
}

template <int MR>
void tile_rows(const float* a, int64_t lda, const void* w, int64_t ldw, bool bf16, int nr, int64_t k, float* out,
               int64_t ldo) {
  switch (nr) {
    case 1: return tile_dispatch<MR, 1>(a, lda, w, ldw, bf16, k, out, ldo);
    case 2: return tile_dispatch<MR, 2>(a, lda, w, ldw, bf16, k, out, ldo);
    case 3: return tile_dispatch<MR, 3>(a, lda, w, ldw, bf16, k, out, ldo);
    default: return tile_dispatch<MR, 4>(a, lda, w, ldw, bf16, k, out, ldo);
  }
}

}  // namespace

float dot_f32(const float* a, const float* b, int64_t n) {
#if defined(__x86_64__)
  if (kAvx2) return dot_f32_avx2(a, b, n);
#endif
  return dot_f32_scalar(a, b, n);
}

void axpy_f32(float* y, float s, const float* x, int64_t n) {
#if defined(__x86_64__)
  if (kAvx2) return axpy_avx2(y, s, x, n);
#endif
  axpy_scalar(y, s, x, n);
}

void matmul_tile(const float* a, int64_t lda, int mr, const void* w, int64_t ldw, bool bf16, int nr, int64_t k,
                 float* out, int64_t ldo) {
  switch (mr) {
    case 1: return tile_rows<1>(a, lda, w, ldw, bf16, nr, k, out, ldo);
    case 2: return tile_rows<2>(a, lda, w, ldw, bf16, nr, k, out, ldo);
    default: return tile_rows<3>(a, lda, w, ldw, bf16, nr, k, out, ldo);
  }
}

bool simd_avx2() { return kAvx2; }

}  // namespace x::kernels
