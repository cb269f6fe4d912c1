#include "sample_simd.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace x::kernels::sampling {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x): 2^round(x·log2 e) times a degree-6 polynomial of the remainder (Cephes expf; relative
// error below 2e-7 on [-87, 0]). Written operation by operation as exp8 below (fused multiply-adds
// where it has them), so both give the same bits.
inline float exp1(float x) {
  x = x > -87.3f ? x : -87.3f;  // _mm256_max_ps(x, c): NaN gives c
  const float fx = std::nearbyint(x * 1.44269504088896341f);
  x = std::fma(-fx, 0.693359375f, x);
  x = std::fma(-fx, -2.12194440e-4f, x);
  float y = 1.9875691500e-4f;
  y = std::fma(y, x, 1.3981999507e-3f);
  y = std::fma(y, x, 8.3334519073e-3f);
  y = std::fma(y, x, 4.1665795894e-2f);
  y = std::fma(y, x, 1.6666665459e-1f);
  y = std::fma(y, x, 5.0000001201e-1f);
  y = std::fma(y, x * x, x + 1.0f);
  const int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return y * scale;
}

float divide_max_portable(const float* in, float t, float* out, int64_t n) {
  float m = kNegInf;
  for (int64_t i = 0; i < n; i++) {
    const float v = in[i] / t;
    out[i] = v;
    if (v > m) m = v;
  }
  return m;
}

int64_t argmax_portable(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;  // first maximum wins, like torch.argmax
  return best;
}

// Eight double accumulators combined as the vector version combines its lanes, then the tail.
double sum_exp_portable(const float* x, int64_t n, float shift) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; l++) acc[l] += static_cast<double>(exp1(x[i + l] - shift));
  }
  double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; i++) s += static_cast<double>(exp1(x[i] - shift));
  return s;
}

#if defined(__x86_64__)
#define X_AVX2 __attribute__((target("avx2,fma")))

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

X_AVX2 inline float hmax(__m256 v) {
  float l[8];
  _mm256_storeu_ps(l, v);
  float m = l[0];
  for (int i = 1; i < 8; i++)
    if (l[i] > m) m = l[i];
  return m;
}

// weight_of() of 8 lanes added to two 4 x u64 accumulators: e·2^44 (exact) split at 2^22 so that
// each half converts to int32 exactly.
X_AVX2 inline void add_weights8(__m256 e, __m256i& acc0, __m256i& acc1) {
  const __m256 x = _mm256_mul_ps(e, _mm256_set1_ps(kWeightScale));
  const __m256 h = _mm256_floor_ps(_mm256_mul_ps(x, _mm256_set1_ps(0x1p-22f)));
  const __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(h, _mm256_set1_ps(0x1p22f)));  // exact
  const __m256i hi = _mm256_cvttps_epi32(h), lo = _mm256_cvttps_epi32(r);
  const __m256i w0 = _mm256_add_epi64(_mm256_slli_epi64(_mm256_cvtepu32_epi64(_mm256_castsi256_si128(hi)), 22),
                                      _mm256_cvtepu32_epi64(_mm256_castsi256_si128(lo)));
  const __m256i w1 = _mm256_add_epi64(_mm256_slli_epi64(_mm256_cvtepu32_epi64(_mm256_extracti128_si256(hi, 1)), 22),
                                      _mm256_cvtepu32_epi64(_mm256_extracti128_si256(lo, 1)));
  acc0 = _mm256_add_epi64(acc0, w0);
  acc1 = _mm256_add_epi64(acc1, w1);
}

X_AVX2 float divide_max_avx2(const float* in, float t, float* out, int64_t n) {
  const __m256 vt = _mm256_set1_ps(t);
  __m256 m0 = _mm256_set1_ps(kNegInf), m1 = m0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_div_ps(_mm256_loadu_ps(in + i), vt);
    const __m256 b = _mm256_div_ps(_mm256_loadu_ps(in + i + 8), vt);
    _mm256_storeu_ps(out + i, a);
    _mm256_storeu_ps(out + i + 8, b);
    m0 = _mm256_max_ps(a, m0);  // (a > m) ? a : m — NaN never wins
    m1 = _mm256_max_ps(b, m1);
  }
  float m = hmax(_mm256_max_ps(m0, m1));
  for (; i < n; i++) {
    const float v = in[i] / t;
    out[i] = v;
    if (v > m) m = v;
  }
  return m;
}

X_AVX2 float max_avx2(const float* x, int64_t n) {
  __m256 m0 = _mm256_set1_ps(kNegInf), m1 = m0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
    m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
  }
  float m = hmax(_mm256_max_ps(m0, m1));
  for (; i < n; i++)
    if (x[i] > m) m = x[i];
  return m;
}

// The scalar loop keeps index 0 when x[0] is NaN and otherwise returns the first index holding the
// largest non-NaN value: the same answer from a vector max and a search for its first copy.
X_AVX2 int64_t argmax_avx2(const float* x, int64_t n) {
  if (n == 0 || std::isnan(x[0])) return 0;
  const float m = max_avx2(x, n);
  const __m256 vm = _mm256_set1_ps(m);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), vm, _CMP_EQ_OQ));
    if (mask != 0) return i + __builtin_ctz(static_cast<unsigned>(mask));
  }
  for (; i < n; i++)
    if (x[i] == m) return i;
  return 0;
}

X_AVX2 void cut_below_avx2(float* x, int64_t n, float mx, float cut) {
  const __m256 vmx = _mm256_set1_ps(mx), vcut = _mm256_set1_ps(cut), ninf = _mm256_set1_ps(kNegInf);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 drop = _mm256_cmp_ps(_mm256_sub_ps(v, vmx), vcut, _CMP_LT_OQ);
    _mm256_storeu_ps(x + i, _mm256_blendv_ps(v, ninf, drop));
  }
  for (; i < n; i++)
    if (x[i] - mx < cut) x[i] = kNegInf;
}

// exp of x[i] - shift into e (and the weight sum when `sum` is given). The tail goes through the
// vector code too (padded with -inf, whose weight is 0), so every element gets the same bits.
X_AVX2 void exp_avx2(const float* x, int64_t n, float shift, float* e, uint64_t* sum) {
  const __m256 vs = _mm256_set1_ps(shift);
  __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
    _mm256_storeu_ps(e + i, v);
    if (sum != nullptr) add_weights8(v, acc0, acc1);
  }
  if (i < n) {
    float tail[8];
    for (int l = 0; l < 8; l++) tail[l] = i + l < n ? x[i + l] : kNegInf;
    const __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(tail), vs));
    _mm256_storeu_ps(tail, v);
    for (int64_t j = i; j < n; j++) e[j] = tail[j - i];
    if (sum != nullptr) add_weights8(v, acc0, acc1);
  }
  if (sum != nullptr) {
    uint64_t l[4];
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(l), _mm256_add_epi64(acc0, acc1));
    *sum = l[0] + l[1] + l[2] + l[3];
  }
}

X_AVX2 int64_t gather_ge_avx2(const float* x, int64_t n, float tau, int32_t* out) {
  const __m256 vt = _mm256_set1_ps(tau);
  int64_t k = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), vt, _CMP_GE_OQ)));
    while (mask != 0) {
      out[k++] = static_cast<int32_t>(i + __builtin_ctz(mask));
      mask &= mask - 1;
    }
  }
  for (; i < n; i++)
    if (x[i] >= tau) out[k++] = static_cast<int32_t>(i);
  return k;
}

X_AVX2 int64_t gather_band_avx2(const float* x, int64_t n, float lo, float hi, int32_t* out) {
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  int64_t k = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 in = _mm256_and_ps(_mm256_cmp_ps(v, vlo, _CMP_GE_OQ), _mm256_cmp_ps(v, vhi, _CMP_LT_OQ));
    unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(in));
    while (mask != 0) {
      out[k++] = static_cast<int32_t>(i + __builtin_ctz(mask));
      mask &= mask - 1;
    }
  }
  for (; i < n; i++)
    if (x[i] >= lo && x[i] < hi) out[k++] = static_cast<int32_t>(i);
  return k;
}

X_AVX2 void band_stats_avx2(const float* x, const float* e, int64_t n, float lo, float hi, int64_t* count,
                            uint64_t* mass) {
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0;
  int64_t k = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 in = _mm256_and_ps(_mm256_cmp_ps(v, vlo, _CMP_GE_OQ), _mm256_cmp_ps(v, vhi, _CMP_LT_OQ));
    const int mask = _mm256_movemask_ps(in);
    if (mask == 0) continue;
    k += __builtin_popcount(static_cast<unsigned>(mask));
    add_weights8(_mm256_and_ps(_mm256_loadu_ps(e + i), in), acc0, acc1);  // weight_of(0) = 0
  }
  uint64_t l[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(l), _mm256_add_epi64(acc0, acc1));
  uint64_t m = l[0] + l[1] + l[2] + l[3];
  for (; i < n; i++) {
    if (x[i] >= lo && x[i] < hi) {
      k++;
      m += weight_of(e[i]);
    }
  }
  *count = k;
  *mass = m;
}

X_AVX2 int64_t count_ge_avx2(const float* x, int64_t n, float tau) {
  const __m256 vt = _mm256_set1_ps(tau);
  int64_t k = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    k += __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), vt, _CMP_GE_OQ))));
  }
  for (; i < n; i++) k += x[i] >= tau ? 1 : 0;
  return k;
}

X_AVX2 int64_t next_above_avx2(const float* x, int64_t from, int64_t n, float v) {
  const __m256 vv = _mm256_set1_ps(v);
  int64_t i = from;
  for (; i + 8 <= n; i += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), vv, _CMP_GT_OQ));
    if (mask != 0) return i + __builtin_ctz(static_cast<unsigned>(mask));
  }
  for (; i < n; i++)
    if (x[i] > v) return i;
  return n;
}

X_AVX2 double sum_exp_avx2(const float* x, int64_t n, float shift) {
  const __m256 vs = _mm256_set1_ps(shift);
  __m256d lo = _mm256_setzero_pd(), hi = lo;  // lanes 0-3 and 4-7
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  double t[4];
  _mm256_storeu_pd(t, _mm256_add_pd(lo, hi));
  double s = (t[0] + t[1]) + (t[2] + t[3]);
  for (; i < n; i++) s += static_cast<double>(exp1(x[i] - shift));
  return s;
}

bool use_avx2() {
  if (std::getenv("X_KERNELS_SAMPLE_PORTABLE") != nullptr &&
      std::strcmp(std::getenv("X_KERNELS_SAMPLE_PORTABLE"), "1") == 0) {
    return false;
  }
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
bool use_avx2() { return false; }
#endif

const bool kAvx2 = use_avx2();

}  // namespace

float divide_max(const float* in, float t, float* out, int64_t n) {
#if defined(__x86_64__)
  if (kAvx2) return divide_max_avx2(in, t, out, n);
#endif
  return divide_max_portable(in, t, out, n);
}

int64_t argmax_first(const float* x, int64_t n) {
#if defined(__x86_64__)
  if (kAvx2) return argmax_avx2(x, n);
#endif
  return argmax_portable(x, n);
}

void cut_below(float* x, int64_t n, float mx, float cut) {
#if defined(__x86_64__)
  if (kAvx2) return cut_below_avx2(x, n, mx, cut);
#endif
  for (int64_t i = 0; i < n; i++)
    if (x[i] - mx < cut) x[i] = kNegInf;
}

uint64_t exp_weights(const float* x, int64_t n, float shift, float* e) {
  uint64_t sum = 0;
#if defined(__x86_64__)
  if (kAvx2) {
    exp_avx2(x, n, shift, e, &sum);
    return sum;
  }
#endif
  for (int64_t i = 0; i < n; i++) {
    e[i] = exp1(x[i] - shift);
    sum += weight_of(e[i]);
  }
  return sum;
}

void exp_shifted(const float* x, int64_t n, float shift, float* out) {
#if defined(__x86_64__)
  if (kAvx2) return exp_avx2(x, n, shift, out, nullptr);
#endif
  for (int64_t i = 0; i < n; i++) out[i] = exp1(x[i] - shift);
}

int64_t gather_ge(const float* x, int64_t n, float tau, int32_t* out) {
#if defined(__x86_64__)
  if (kAvx2) return gather_ge_avx2(x, n, tau, out);
#endif
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++)
    if (x[i] >= tau) out[k++] = static_cast<int32_t>(i);
  return k;
}

int64_t gather_band(const float* x, int64_t n, float lo, float hi, int32_t* out) {
#if defined(__x86_64__)
  if (kAvx2) return gather_band_avx2(x, n, lo, hi, out);
#endif
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++)
    if (x[i] >= lo && x[i] < hi) out[k++] = static_cast<int32_t>(i);
  return k;
}

void band_stats(const float* x, const float* e, int64_t n, float lo, float hi, int64_t* count, uint64_t* mass) {
#if defined(__x86_64__)
  if (kAvx2) return band_stats_avx2(x, e, n, lo, hi, count, mass);
#endif
  int64_t k = 0;
  uint64_t m = 0;
  for (int64_t i = 0; i < n; i++) {
    if (x[i] >= lo && x[i] < hi) {
      k++;
      m += weight_of(e[i]);
    }
  }
  *count = k;
  *mass = m;
}

int64_t count_ge(const float* x, int64_t n, float tau) {
#if defined(__x86_64__)
  if (kAvx2) return count_ge_avx2(x, n, tau);
#endif
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) k += x[i] >= tau ? 1 : 0;
  return k;
}

int64_t next_above(const float* x, int64_t from, int64_t n, float v) {
#if defined(__x86_64__)
  if (kAvx2) return next_above_avx2(x, from, n, v);
#endif
  for (int64_t i = from; i < n; i++)
    if (x[i] > v) return i;
  return n;
}

double sum_exp(const float* x, int64_t n, float shift) {
#if defined(__x86_64__)
  if (kAvx2) return sum_exp_avx2(x, n, shift);
#endif
  return sum_exp_portable(x, n, shift);
}

}  // namespace x::kernels::sampling
