#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

namespace nw {

void SamplingParams::validate() const {
  NW_CHECK(temperature >= 0 && std::isfinite(temperature), "temperature must be finite and >= 0, got ", temperature);
  NW_CHECK(top_k >= 0, "top_k must be >= 0 (0 = off), got ", top_k);
  NW_CHECK(top_p > 0 && top_p <= 1, "top_p must be in (0, 1], got ", top_p);
}

namespace {
// Plain temperature sampling over the whole vocabulary: no candidate order is needed, so the
// cumulative sum runs in index order (one pass for the max, one for the mass, one to find u).
int32_t sample_full(const float* z, int V, double temperature, double u01) {
  const double mx = *std::max_element(z, z + V);
  std::vector<double> prob(V);
  double total = 0;
  for (int v = 0; v < V; ++v) total += prob[v] = std::exp((double(z[v]) - mx) / temperature);
  const double u = u01 * total;
  double acc = 0;
  for (int v = 0; v < V; ++v) {
    acc += prob[v];
    if (u < acc) return v;
  }
  return int32_t(std::max_element(z, z + V) - z);  // u == total after rounding: the most likely token
}

int32_t sample_row(const float* z, int V, const SamplingParams& p, uint64_t stream, uint64_t draw) {
  if (p.temperature == 0) return int32_t(std::max_element(z, z + V) - z);  // first maximum
  if ((p.top_k == 0 || p.top_k >= V) && p.top_p >= 1)
    return sample_full(z, V, p.temperature, rng_uniform(p.seed, stream, draw));
  // Candidates by descending logit (ties: lower index first), cut to top_k.
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  const int k = p.top_k > 0 ? std::min(p.top_k, V) : V;
  auto higher = [z](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), higher);
  idx.resize(k);
  // Softmax over the candidates at this temperature, in float64.
  std::vector<double> prob(k);
  double total = 0;
  for (int i = 0; i < k; ++i) total += prob[i] = std::exp((double(z[idx[i]]) - double(z[idx[0]])) / p.temperature);
  // Nucleus: the shortest prefix whose mass reaches top_p.
  int keep = k;
  if (p.top_p < 1) {
    double mass = 0;
    for (int i = 0; i < k; ++i) {
      mass += prob[i] / total;
      if (mass >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (int i = 0; i < keep; ++i) kept += prob[i];
  const double u = rng_uniform(p.seed, stream, draw) * kept;
  double acc = 0;
  for (int i = 0; i < keep; ++i) {
    acc += prob[i];
    if (u < acc) return idx[i];
  }
  return idx[keep - 1];
}
}  // namespace

int32_t sample_token(const float* logits, int V, const SamplingParams& p, uint64_t stream, uint64_t draw) {
  return sample_row(logits, V, p, stream, draw);
}

void sample_tokens(const float* logits, int B, int V, const SamplingParams& p, uint64_t draw, int32_t* out) {
  p.validate();
  // Rows are independent draws (stream b), so splitting them over threads changes no result.
#pragma omp parallel for schedule(static) if (B > 1)
  for (int b = 0; b < B; ++b) out[b] = sample_row(logits + int64_t(b) * V, V, p, uint64_t(b), draw);
}

}  // namespace nw
