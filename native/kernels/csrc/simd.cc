#include "simd.h"

#include <cmath>

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

float exp_shifted_sum_scalar(float* x, float shift, int64_t n) {
  float sum = 0;
  for (int64_t i = 0; i < n; i++) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
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

// exp of 8 lanes: 2^round(x·log2 e) times a degree-6 polynomial of the remainder (Cephes expf).
X_AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

X_AVX2 float exp_shifted_sum_avx2(float* x, float shift, int64_t n) {
  const __m256 vs = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
    _mm256_storeu_ps(x + i, v);
    acc = _mm256_add_ps(acc, v);
  }
  float sum = hsum(acc);
  if (i < n) {
    float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = i; j < n; j++) tail[j - i] = x[j] - shift;
    __m256 v = exp8(_mm256_loadu_ps(tail));
    _mm256_storeu_ps(tail, v);
    for (int64_t j = i; j < n; j++) {
      x[j] = tail[j - i];
      sum += x[j];
    }
  }
  return sum;
}

// Eight dot products at once: the partial sums of keys 0..7 reduced to one vector by a hadd tree.
X_AVX2 inline __m256 reduce8(__m256 v0, __m256 v1, __m256 v2, __m256 v3, __m256 v4, __m256 v5, __m256 v6,
                             __m256 v7) {
  __m256 a = _mm256_hadd_ps(v0, v1), b = _mm256_hadd_ps(v2, v3);
  __m256 c = _mm256_hadd_ps(v4, v5), d = _mm256_hadd_ps(v6, v7);
  __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
  // ab = [k0 k1 k2 k3 | k0 k1 k2 k3] halves (low lane, high lane); same for cd with k4..k7.
  __m256 lo = _mm256_permute2f128_ps(ab, cd, 0x20), hi = _mm256_permute2f128_ps(ab, cd, 0x31);
  return _mm256_add_ps(lo, hi);
}

X_AVX2 void block_scores_avx2(const float* q, const float* k, int64_t ld, int64_t hd, int64_t n, float scale,
                              float* s) {
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t j = 0;
  if (hd % 8 == 0) {
    for (; j + 8 <= n; j += 8) {
      __m256 p[8];
      for (int u = 0; u < 8; u++) p[u] = _mm256_setzero_ps();
      for (int64_t d = 0; d < hd; d += 8) {
        __m256 qv = _mm256_loadu_ps(q + d);
        for (int u = 0; u < 8; u++) p[u] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + (j + u) * ld + d), p[u]);
      }
      _mm256_storeu_ps(s + j, _mm256_mul_ps(reduce8(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]), vscale));
    }
  }
  for (; j < n; j++) s[j] = dot_f32_avx2(q, k + j * ld, hd) * scale;
}

X_AVX2 void block_accumulate_avx2(float* acc, const float* w, const float* v, int64_t ld, int64_t hd,
                                  int64_t n) {
  int64_t d = 0;
  for (; d + 8 <= hd; d += 8) {
    __m256 a = _mm256_loadu_ps(acc + d);
    for (int64_t j = 0; j < n; j++) a = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_loadu_ps(v + j * ld + d), a);
    _mm256_storeu_ps(acc + d, a);
  }
  for (; d < hd; d++) {
    for (int64_t j = 0; j < n; j++) acc[d] += w[j] * v[j * ld + d];
  }
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

void block_scores(const float* q, const float* k, int64_t ld, int64_t hd, int64_t n, float scale, float* s) {
#if defined(__x86_64__)
  if (kAvx2) return block_scores_avx2(q, k, ld, hd, n, scale, s);
#endif
  for (int64_t j = 0; j < n; j++) s[j] = dot_f32_scalar(q, k + j * ld, hd) * scale;
}

void block_accumulate(float* acc, const float* w, const float* v, int64_t ld, int64_t hd, int64_t n) {
#if defined(__x86_64__)
  if (kAvx2) return block_accumulate_avx2(acc, w, v, ld, hd, n);
#endif
  for (int64_t j = 0; j < n; j++) axpy_scalar(acc, w[j], v + j * ld, hd);
}

float exp_shifted_sum(float* x, float shift, int64_t n) {
#if defined(__x86_64__)
  if (kAvx2) return exp_shifted_sum_avx2(x, shift, n);
#endif
  return exp_shifted_sum_scalar(x, shift, n);
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
