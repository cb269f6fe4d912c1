// Sampling with vLLM v1 semantics (vllm/v1/sample/sampler.py), per row:
//   1. logprobs (if asked) from the RAW logits: log_softmax before any processing (vLLM's default
//      logprobs_mode "raw_logprobs"); the sampled token's logprob and rank come from the same.
//   2. suppressed ids -> -inf (min_tokens), logit_bias added, then penalties: repetition (tokens in
//      prompt or output: positive logits divided, negative multiplied), frequency (× output count)
//      and presence (× seen in output) subtracted.
//   3. temperature < 1e-5: greedy argmax of the processed logits. Otherwise: divide by temperature,
//      min_p (drop tokens whose probability < min_p × max probability), top-k (keep logits >= the
//      k-th largest), top-p (in descending order, the smaller id first among equal logits, drop the
//      least likely tokens while their total probability is <= 1 - p, always keeping the largest),
//      then draw from what is left.
// The draw is inverse-CDF over the kept tokens in descending-probability order with one uniform
// number u = sample_uniform(seed, step) (SplitMix64; documented in the package README), so a
// request with a seed reproduces exactly, independent of batch composition.
//
// How it stays cheap (a sampled row costs a few vector passes over the vocabulary instead of a sort
// of it): probabilities are integer weights (sample_simd.h) whose sums are exact and independent
// of order, so the mass before any rank is one number however it is found. top-k finds its
// threshold by selection among the tokens above a cut found by counting passes; top-p and the draw
// each need only the rank where the cumulative weight crosses a target (Ranking below), and only
// the tokens around it are put in order. Probabilities differ from exact ones by f32 exp rounding
// (< 2e-7 relative) and the 2^-44 weight quantum, so a seeded draw can differ from one computed
// with exact arithmetic only when u lands that close to the edge of a token's slice.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernels.h"
#include "sample_simd.h"
#include "thread_pool.h"

namespace x::kernels {
namespace {

using sampling::weight_of;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kLowest = std::numeric_limits<float>::lowest();
// A band of at most this many tokens is sorted; a larger one is split into value buckets.
constexpr size_t kSortLimit = 256;
constexpr int kBuckets = 1024;
// Band widths below the max (doubling); past the last, every finite token. Weights vanish 30.5
// below the max (exp(-30.5) < 2^-44), so the bands down to 32 already hold all the mass.
constexpr float kFirstDelta = 2.0f, kLastDelta = 32.0f;

// A range of values [lo, hi) of a row: how many kept tokens it holds and their weight; once
// gathered, its ids are Scratch::band_ids[begin, end), their buckets band_bucket[begin, end), and
// the buckets' weights bucket_w[buckets, buckets + kBuckets) (one bucket when scale is 0).
struct Band {
  float lo, hi;
  int64_t count;
  uint64_t mass;
  bool gathered = false;
  size_t begin = 0, end = 0, buckets = 0;
  float top = 0, scale = 0;
};

// Per-thread scratch reused across calls (a row's processed copy and its exp values: V floats).
struct Scratch {
  std::vector<float> work, e, vals, evals;
  std::vector<int32_t> cand, ids, band_ids;
  std::vector<uint16_t> band_bucket;
  std::vector<uint64_t> members, bucket_w;
  std::vector<Band> bands;
  std::vector<std::pair<float, int32_t>> top;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void raw_logprobs(const SampleParams& p, const float* raw, int64_t vocab, int64_t b, int64_t chosen, Scratch& s) {
  const float mx = raw[sampling::argmax_first(raw, vocab)];
  const double lse = static_cast<double>(mx) + std::log(sampling::sum_exp(raw, vocab, mx));
  auto lp = [&](int64_t i) { return static_cast<float>(raw[i] - lse); };
  if (p.sampled_logprob != nullptr) p.sampled_logprob[b] = lp(chosen);
  // vLLM's rank: how many tokens have a logprob >= the sampled one's (1 = the most likely).
  if (p.sampled_rank != nullptr) p.sampled_rank[b] = static_cast<int32_t>(sampling::count_ge(raw, vocab, raw[chosen]));
  if (p.num_top > 0) {
    // The n largest (value descending, the smaller id first among equals) in one pass: a sorted
    // list that a later token enters only when strictly larger than its last entry.
    const int64_t n = std::min(p.num_top, vocab);
    auto& top = s.top;
    top.clear();
    auto insert = [&](int64_t i) {
      const float v = raw[i];
      auto at = std::find_if(top.begin(), top.end(), [&](const auto& x) { return x.first < v; });
      top.insert(at, {v, static_cast<int32_t>(i)});
      if (static_cast<int64_t>(top.size()) > n) top.pop_back();
    };
    int64_t i = 0;
    for (; i < vocab && static_cast<int64_t>(top.size()) < n; i++) insert(i);
    while ((i = sampling::next_above(raw, i, vocab, top.back().first)) < vocab) insert(i++);
    for (int64_t j = 0; j < p.num_top; j++) {
      p.top_ids[b * p.num_top + j] = j < n ? top[j].second : -1;
      p.top_logprobs[b * p.num_top + j] = j < n ? lp(top[j].second) : kNegInf;
    }
  }
}

bool modifies(const SampleRow& r) {
  return !r.suppress_ids.empty() || !r.bias_ids.empty() || r.repetition_penalty != 1.0f ||
         r.presence_penalty != 0.0f || r.frequency_penalty != 0.0f;
}

// Only tokens of the prompt or the output are penalized; each gets exactly the update a dense loop
// over the vocabulary would give it.
void process(const SampleRow& r, float* l, Scratch& s) {
  for (int32_t id : r.suppress_ids) l[id] = kNegInf;
  for (size_t i = 0; i < r.bias_ids.size(); i++) l[r.bias_ids[i]] += r.bias_values[i];
  const bool rep = r.repetition_penalty != 1.0f;
  if (!rep && r.presence_penalty == 0.0f && r.frequency_penalty == 0.0f) return;
  std::vector<int32_t>& out = s.ids;
  out.assign(r.output_ids.begin(), r.output_ids.end());
  std::sort(out.begin(), out.end());
  std::vector<int32_t>& seen = s.cand;
  seen.assign(r.prompt_ids.begin(), r.prompt_ids.end());
  seen.insert(seen.end(), out.begin(), out.end());
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  size_t o = 0;
  for (int32_t id : seen) {
    int32_t count = 0;
    while (o < out.size() && out[o] < id) o++;
    while (o < out.size() && out[o] == id) {
      count++;
      o++;
    }
    if (rep) l[id] = l[id] > 0 ? l[id] / r.repetition_penalty : l[id] * r.repetition_penalty;
    if (count > 0) l[id] -= r.frequency_penalty * count + r.presence_penalty;
  }
}

// The k-th largest value of l (k < n): selection among the tokens above a threshold that leaves at
// least k of them and not many more (found by a few vector counting passes).
float kth_largest(const float* l, int64_t n, int64_t k, float mx, Scratch& s) {
  float delta = kFirstDelta;
  int64_t c = sampling::count_ge(l, n, mx - delta);
  while (c < k && delta <= kLastDelta) {
    delta *= 2;
    c = sampling::count_ge(l, n, mx - delta);
  }
  float tau = c < k ? kNegInf : mx - delta;  // fewer than k that close to the max: all of them
  while (tau != kNegInf && c > 4 * k + 256 && delta > 1e-3f) {
    const float half = delta / 2;
    const int64_t ch = sampling::count_ge(l, n, mx - half);
    if (ch < k) break;
    delta = half;
    c = ch;
    tau = mx - delta;
  }
  s.cand.resize(static_cast<size_t>(n));
  const int64_t m = sampling::gather_ge(l, n, tau, s.cand.data());
  if (m < k) return kNegInf;  // NaNs
  s.vals.resize(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; j++) s.vals[j] = l[s.cand[j]];
  std::nth_element(s.vals.begin(), s.vals.begin() + (k - 1), s.vals.end(), std::greater<float>());
  return s.vals[k - 1];
}

// A token's place in rank order (value descending, the smaller id first among equals) as one
// integer: ascending keys are that order. -0 counts as +0, as the comparison of values does.
uint64_t rank_key(float v, int32_t id) {
  v += 0.0f;
  uint32_t b;
  std::memcpy(&b, &v, 4);
  b = (b & 0x80000000u) != 0 ? ~b : (b | 0x80000000u);  // ascending with the value
  return (static_cast<uint64_t>(~b) << 32) | static_cast<uint32_t>(id);
}
int32_t id_of(uint64_t key) { return static_cast<int32_t>(static_cast<uint32_t>(key)); }

// The kept tokens of a row (finite values >= floor, exp values e) in rank order. find(t) returns
// the token whose slice [before, before + weight) of the cumulative weight in that order holds t.
// Every token of a value range ranks after every token above it, so the weight before a range is
// the (exact) weight of the tokens above it: bands of values below the max (2, 4, 8, ... wide) are
// weighed by one vector pass each until one holds t. Only that band's tokens are gathered, into
// buckets of equal value width (the bucket is monotone in the value: consecutive ranks), and only
// the bucket holding t is put in order.
class Ranking {
 public:
  Ranking(const float* l, const float* e, int64_t n, float mx, float floor, Scratch& s)
      : l_(l), e_(e), n_(n), mx_(mx), floor_(floor), s_(s) {
    s_.band_ids.clear();
    s_.band_bucket.clear();
    s_.bucket_w.clear();
    s_.bands.clear();
  }

  // The kept tokens are exactly the `count` tokens >= floor (top-k), weighing `mass` together.
  void preset(int64_t count, uint64_t mass) {
    s_.bands.push_back(Band{floor_, std::numeric_limits<float>::infinity(), count, mass});
    exhausted_ = true;
  }

  int32_t find(uint64_t t, uint64_t* before) {
    uint64_t p = 0;
    for (size_t b = 0;; b++) {
      if (b == s_.bands.size() && !next_band()) break;
      if (t < p + s_.bands[b].mass) return locate(b, t, p, before);
      p += s_.bands[b].mass;
    }
    *before = 0;  // unreachable while the weights add up (t < their sum): the most likely token
    return static_cast<int32_t>(sampling::argmax_first(l_, n_));
  }

 private:
  bool next_band() {
    if (exhausted_) return false;
    delta_ = delta_ == 0 ? kFirstDelta : delta_ * 2;
    float lo = delta_ > kLastDelta ? floor_ : std::max(mx_ - delta_, floor_);
    if (lo <= floor_) {
      lo = floor_;
      exhausted_ = true;
    }
    Band band{lo, hi_, 0, 0};
    sampling::band_stats(l_, e_, n_, lo, hi_, &band.count, &band.mass);
    s_.bands.push_back(band);
    hi_ = lo;
    return true;
  }

  // Gathers band b's tokens with their buckets (once).
  void gather(Band& band) {
    s_.cand.resize(static_cast<size_t>(n_));
    const int64_t k = sampling::gather_band(l_, n_, band.lo, band.hi, s_.cand.data());
    band.begin = s_.band_ids.size();
    band.end = band.begin + static_cast<size_t>(k);
    band.buckets = s_.bucket_w.size();
    band.top = std::min(band.hi, mx_);
    const float range = band.top - band.lo;
    const bool split = k > static_cast<int64_t>(kSortLimit) && range > 0 && std::isfinite(range);
    band.scale = split ? static_cast<float>(kBuckets) / range : 0.0f;
    s_.bucket_w.resize(band.buckets + (split ? kBuckets : 1), 0);
    uint64_t* bw = s_.bucket_w.data() + band.buckets;
    for (int64_t j = 0; j < k; j++) {
      const int32_t i = s_.cand[j];
      const int b = split ? bucket(band, l_[i]) : 0;
      s_.band_ids.push_back(i);
      s_.band_bucket.push_back(static_cast<uint16_t>(b));
      bw[b] += weight_of(e_[i]);
    }
    band.gathered = true;
  }

  static int bucket(const Band& band, float v) {
    return std::min(kBuckets - 1, static_cast<int>((band.top - v) * band.scale));
  }

  int32_t locate(size_t bi, uint64_t t, uint64_t p, uint64_t* before) {
    if (!s_.bands[bi].gathered) gather(s_.bands[bi]);
    const Band& band = s_.bands[bi];
    const uint64_t* bw = s_.bucket_w.data() + band.buckets;
    const int last = band.scale > 0 ? kBuckets - 1 : 0;
    int q = 0;
    while (q < last && t >= p + bw[q]) p += bw[q++];
    std::vector<uint64_t>& m = s_.members;
    m.clear();
    for (size_t j = band.begin; j < band.end; j++) {
      if (s_.band_bucket[j] == q) m.push_back(rank_key(l_[s_.band_ids[j]], s_.band_ids[j]));
    }
    std::sort(m.begin(), m.end());
    for (uint64_t key : m) {
      const uint64_t w = weight_of(e_[id_of(key)]);
      if (t < p + w) {
        *before = p;
        return id_of(key);
      }
      p += w;
    }
    *before = 0;  // unreachable: t < p + the bucket's weight
    return static_cast<int32_t>(sampling::argmax_first(l_, n_));
  }

  const float* l_;
  const float* e_;
  const int64_t n_;
  const float mx_, floor_;
  Scratch& s_;
  float hi_ = std::numeric_limits<float>::infinity();  // the next band's values are below this
  float delta_ = 0;
  bool exhausted_ = false;
};

// l: the processed logits divided by the temperature (modified: min-p), mx: their max.
int64_t draw(const SampleRow& r, float* l, int64_t vocab, float mx, Scratch& s) {
  if (!(mx > kNegInf) || !std::isfinite(mx)) return sampling::argmax_first(l, vocab);
  if (r.min_p > 0.0f) {
    // p_i / p_max = exp(l_i - l_max): the softmax normalizer cancels.
    sampling::cut_below(l, vocab, mx, std::log(r.min_p));
  }
  s.e.resize(static_cast<size_t>(vocab));
  float floor = kLowest;  // the least value kept (finite: -inf tokens never are)
  uint64_t z = 0;
  if (r.top_k > 0 && r.top_k < vocab) {
    // Ties with the k-th largest logit stay, as in vLLM's mask (logits < kth are dropped). Only
    // the kept tokens need exp values.
    floor = std::max(kth_largest(l, vocab, r.top_k, mx, s), kLowest);
    s.cand.resize(static_cast<size_t>(vocab));
    const int64_t k = sampling::gather_ge(l, vocab, floor, s.cand.data());
    s.vals.resize(static_cast<size_t>(k));
    s.evals.resize(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; j++) s.vals[j] = l[s.cand[j]];
    sampling::exp_shifted(s.vals.data(), k, mx, s.evals.data());
    for (int64_t j = 0; j < k; j++) {
      s.e[s.cand[j]] = s.evals[j];
      z += weight_of(s.evals[j]);
    }
  } else {
    z = sampling::exp_weights(l, vocab, mx, s.e.data());
  }
  if (z == 0) return sampling::argmax_first(l, vocab);  // (the max alone weighs 2^44)
  Ranking ranking(l, s.e.data(), vocab, mx, floor, s);
  if (floor > kLowest) ranking.preset(static_cast<int64_t>(s.vals.size()), z);
  uint64_t total = z, before = 0;
  if (r.top_p < 1.0f) {
    // The least likely tokens go while their weight is <= (1 - p) of the total: the kept ones are
    // the ranks up to the one holding weight z - dropped - 1 (the most likely always stays).
    auto drop = static_cast<uint64_t>(std::floor((1.0 - static_cast<double>(r.top_p)) * static_cast<double>(z)));
    if (drop >= z) drop = z - 1;
    const int32_t last = ranking.find(z - drop - 1, &before);
    total = before + weight_of(s.e[last]);
  }
  const double u = sample_uniform(r.seed, r.step);
  auto t = static_cast<uint64_t>(std::floor(u * static_cast<double>(total)));
  if (t >= total) t = total - 1;
  return ranking.find(t, &before);
}

}  // namespace

double sample_uniform(uint64_t seed, uint64_t step) {
  uint64_t x = splitmix64(splitmix64(seed) ^ step);
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

Status sample(const SampleParams& p) {
  const int64_t vocab = p.logits.cols, rows = p.logits.rows;
  for (int64_t b = 0; b < rows; b++) {
    const SampleRow& r = p.rows[b];
    for (const auto* ids : {&r.prompt_ids, &r.output_ids, &r.bias_ids, &r.suppress_ids}) {
      for (int32_t id : *ids) {
        if (id < 0 || id >= vocab) {
          return Status::Invalid("sample: row " + std::to_string(b) + " names token " + std::to_string(id) +
                                 " outside the vocabulary [0, " + std::to_string(vocab) + ")");
        }
      }
    }
  }
  parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
    Scratch& s = scratch();
    s.work.resize(static_cast<size_t>(vocab));
    float* work = s.work.data();
    for (int64_t b = begin; b < end; b++) {
      const SampleRow& r = p.rows[b];
      const float* raw = p.logits.row(b);
      const bool mods = modifies(r);
      if (mods) {
        std::copy(raw, raw + vocab, work);
        process(r, work, s);
      }
      const float* processed = mods ? work : raw;
      int64_t chosen;
      if (r.temperature < 1e-5f) {
        chosen = sampling::argmax_first(processed, vocab);
      } else {
        const float mx = sampling::divide_max(processed, r.temperature, work, vocab);
        chosen = draw(r, work, vocab, mx, s);
      }
      p.sampled[b] = static_cast<int32_t>(chosen);
      if (p.sampled_logprob != nullptr || p.sampled_rank != nullptr || p.num_top > 0) {
        raw_logprobs(p, raw, vocab, b, chosen, s);
      }
    }
  });
  return Status::Ok();
}

}  // namespace x::kernels
