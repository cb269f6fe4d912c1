// Sampling with vLLM v1 semantics (vllm/v1/sample/sampler.py), per row:
//   1. logprobs (if asked) from the RAW logits: log_softmax before any processing (vLLM's default
//      logprobs_mode "raw_logprobs"); the sampled token's logprob and rank come from the same.
//   2. suppressed ids -> -inf (min_tokens), logit_bias added, then penalties: repetition (tokens in
//      prompt or output: positive logits divided, negative multiplied), frequency (× output count)
//      and presence (× seen in output) subtracted.
//   3. temperature < 1e-5: greedy argmax of the processed logits. Otherwise: divide by temperature,
//      min_p (drop tokens whose probability < min_p × max probability), top-k (keep logits >= the
//      k-th largest), top-p (sorted ascending, drop tokens whose cumulative probability <= 1 - p,
//      always keeping the largest), then draw from the softmax of what is left.
// The draw is inverse-CDF over the kept tokens in descending-probability order with one uniform
// number u = sample_uniform(seed, step) (SplitMix64; documented in the package README), so a
// request with a seed reproduces exactly, independent of batch composition.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "kernels.h"
#include "thread_pool.h"

namespace x::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

int64_t argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; i++)
    if (v[i] > v[best]) best = i;  // first maximum wins, like torch.argmax
  return best;
}

void raw_logprobs(const SampleParams& p, const float* raw, int64_t vocab, int64_t b, int64_t chosen) {
  double mx = raw[argmax(raw, vocab)], s = 0;
  for (int64_t i = 0; i < vocab; i++) s += std::exp(static_cast<double>(raw[i]) - mx);
  const double lse = mx + std::log(s);
  auto lp = [&](int64_t i) { return static_cast<float>(raw[i] - lse); };
  if (p.sampled_logprob != nullptr) p.sampled_logprob[b] = lp(chosen);
  if (p.sampled_rank != nullptr) {
    // vLLM's rank: how many tokens have a logprob >= the sampled one's (1 = the most likely).
    int32_t rank = 0;
    for (int64_t i = 0; i < vocab; i++) rank += raw[i] >= raw[chosen] ? 1 : 0;
    p.sampled_rank[b] = rank;
  }
  if (p.num_top > 0) {
    std::vector<int32_t> idx(static_cast<size_t>(vocab));
    std::iota(idx.begin(), idx.end(), 0);
    const int64_t n = std::min(p.num_top, vocab);
    std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int32_t x, int32_t y) {
      return raw[x] > raw[y] || (raw[x] == raw[y] && x < y);
    });
    for (int64_t j = 0; j < p.num_top; j++) {
      p.top_ids[b * p.num_top + j] = j < n ? idx[j] : -1;
      p.top_logprobs[b * p.num_top + j] = j < n ? lp(idx[j]) : kNegInf;
    }
  }
}

void process(const SampleRow& r, float* l, int64_t vocab) {
  for (int32_t id : r.suppress_ids) l[id] = kNegInf;
  for (size_t i = 0; i < r.bias_ids.size(); i++) l[r.bias_ids[i]] += r.bias_values[i];
  const bool rep = r.repetition_penalty != 1.0f;
  if (!rep && r.presence_penalty == 0.0f && r.frequency_penalty == 0.0f) return;
  std::vector<int32_t> counts(static_cast<size_t>(vocab), 0);
  std::vector<uint8_t> seen(static_cast<size_t>(vocab), 0);
  for (int32_t id : r.output_ids) {
    counts[id]++;
    seen[id] = 1;
  }
  for (int32_t id : r.prompt_ids) seen[id] = 1;
  for (int64_t i = 0; i < vocab; i++) {
    if (rep && seen[i]) l[i] = l[i] > 0 ? l[i] / r.repetition_penalty : l[i] * r.repetition_penalty;
    if (counts[i] > 0) l[i] -= r.frequency_penalty * counts[i] + r.presence_penalty;
  }
}

int64_t draw(const SampleRow& r, float* l, int64_t vocab) {
  for (int64_t i = 0; i < vocab; i++) l[i] /= r.temperature;
  const float mx = l[argmax(l, vocab)];
  if (r.min_p > 0.0f) {
    // p_i / p_max = exp(l_i - l_max): the softmax normalizer cancels.
    const float cut = std::log(r.min_p);
    for (int64_t i = 0; i < vocab; i++)
      if (l[i] - mx < cut) l[i] = kNegInf;
  }
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  auto desc = [&](int32_t x, int32_t y) { return l[x] > l[y] || (l[x] == l[y] && x < y); };
  int64_t kept = vocab;
  if (r.top_k > 0 && r.top_k < vocab) {
    std::nth_element(order.begin(), order.begin() + (r.top_k - 1), order.end(), desc);
    const float kth = l[order[r.top_k - 1]];
    // Ties with the k-th largest logit stay, as in vLLM's mask (logits < kth are dropped).
    auto mid = std::partition(order.begin(), order.end(), [&](int32_t i) { return l[i] >= kth; });
    kept = mid - order.begin();
  }
  std::sort(order.begin(), order.begin() + kept, desc);
  while (kept > 1 && l[order[kept - 1]] == kNegInf) kept--;
  std::vector<double> prob(static_cast<size_t>(kept));
  double total = 0;
  for (int64_t j = 0; j < kept; j++) total += prob[j] = std::exp(static_cast<double>(l[order[j]]) - mx);
  if (r.top_p < 1.0f) {
    // Ascending cumulative mass <= 1 - p is dropped; the most likely token always stays.
    double cum = 0;
    int64_t keep = kept;
    for (int64_t j = kept - 1; j > 0; j--) {
      cum += prob[j] / total;
      if (cum <= 1.0 - static_cast<double>(r.top_p)) keep = j;
      else break;
    }
    for (int64_t j = keep; j < kept; j++) total -= prob[j];
    kept = keep;
  }
  const double u = sample_uniform(r.seed, r.step) * total;
  double acc = 0;
  for (int64_t j = 0; j < kept; j++) {
    acc += prob[j];
    if (u < acc) return order[j];
  }
  return order[kept - 1];
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
    std::vector<float> work(static_cast<size_t>(vocab));
    for (int64_t b = begin; b < end; b++) {
      const SampleRow& r = p.rows[b];
      const float* raw = p.logits.row(b);
      std::copy(raw, raw + vocab, work.begin());
      process(r, work.data(), vocab);
      const int64_t chosen = r.temperature < 1e-5f ? argmax(work.data(), vocab) : draw(r, work.data(), vocab);
      p.sampled[b] = static_cast<int32_t>(chosen);
      if (p.sampled_logprob != nullptr || p.sampled_rank != nullptr || p.num_top > 0) {
        raw_logprobs(p, raw, vocab, b, chosen);
      }
    }
  });
  return Status::Ok();
}

}  // namespace x::kernels
