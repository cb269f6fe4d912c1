// Vector loops of the CPU sampler (sampling.cc), with an AVX2+FMA version picked at run time and a
// portable one that computes bit-identical results (the same operations in the same order, fused
// multiply-adds included), so a seeded draw does not depend on the machine or on which lanes a
// value fell in. X_KERNELS_SAMPLE_PORTABLE=1 forces the portable loops (tests, benchmarks).
#pragma once

#include <cstdint>

namespace x::kernels::sampling {

// Probability weights are exp(v - max) in fixed point, 2^44 for the most likely token: integer
// sums are exact and independent of summation order, so the cumulative mass before any rank is one
// well-defined number however the ranks are found. A token whose probability is below 2^-44 of the
// most likely one has weight 0 (and is never drawn). Sums stay below 2^63 for vocabularies < 2^19.
constexpr float kWeightScale = 0x1p44f;
inline uint64_t weight_of(float e) { return static_cast<uint64_t>(e * kWeightScale); }  // floor

// out[i] = in[i] / t (in == out allowed); returns the largest result (NaN ignored; -inf if none).
float divide_max(const float* in, float t, float* out, int64_t n);
// The index of the first largest value (the scalar loop `if (x[i] > x[best]) best = i`).
int64_t argmax_first(const float* x, int64_t n);
// x[i] = -inf where x[i] - mx < cut (min-p).
void cut_below(float* x, int64_t n, float mx, float cut);
// e[i] = exp(x[i] - shift); returns the sum of weight_of(e[i]).
uint64_t exp_weights(const float* x, int64_t n, float shift, float* e);
// out[i] = exp(x[i] - shift), the same values exp_weights stores.
void exp_shifted(const float* x, int64_t n, float shift, float* out);
// Indices i (ascending) with x[i] >= tau into out; returns how many.
int64_t gather_ge(const float* x, int64_t n, float tau, int32_t* out);
// Indices i (ascending) with lo <= x[i] < hi into out; returns how many.
int64_t gather_band(const float* x, int64_t n, float lo, float hi, int32_t* out);
// How many lo <= x[i] < hi, and the sum of weight_of(e[i]) over them.
void band_stats(const float* x, const float* e, int64_t n, float lo, float hi, int64_t* count, uint64_t* mass);
// How many x[i] >= tau.
int64_t count_ge(const float* x, int64_t n, float tau);
// The first index i in [from, n) with x[i] > v, or n.
int64_t next_above(const float* x, int64_t from, int64_t n, float v);
// sum of exp(x[i] - shift), accumulated in double (log-softmax normalizer).
double sum_exp(const float* x, int64_t n, float shift);

}  // namespace x::kernels::sampling
