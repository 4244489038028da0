// Token sampling: the empirical frequencies of seeded draws match the softmax at the temperature, for the
// plain path (whole vocabulary, index order) and the filtered path (top-k); greedy takes the first maximum.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/sampler.h"

namespace {

// Frequencies of `n` draws from one row of logits (each draw its own counter value).
std::vector<double> frequencies(const std::vector<float>& z, const nw::SamplingParams& p, int n) {
  std::vector<double> f(z.size(), 0.0);
  for (int i = 0; i < n; ++i) {
    int32_t t = -1;
    nw::sample_tokens(z.data(), 1, int(z.size()), p, uint64_t(i), &t);
    f.at(t) += 1.0 / n;
  }
  return f;
}

std::vector<double> softmax(const std::vector<float>& z, double temperature, int keep_top = 0) {
  std::vector<double> p(z.size());
  double total = 0;
  for (size_t v = 0; v < z.size(); ++v) {
    int higher = 0;
    for (float w : z) higher += w > z[v];
    total += p[v] = (keep_top && higher >= keep_top) ? 0.0 : std::exp(z[v] / temperature);
  }
  for (double& x : p) x /= total;
  return p;
}

}  // namespace

TEST(Sampler, FrequenciesMatchTheSoftmax) {
  const std::vector<float> z = {0.5f, -1.0f, 2.0f, 0.0f, 1.0f, -3.0f};
  const int n = 40000;  // standard error of a frequency <= 0.0025
  for (float temperature : {1.0f, 0.7f}) {
    nw::SamplingParams p;
    p.temperature = temperature;
    p.seed = 5;
    const auto f = frequencies(z, p, n), want = softmax(z, temperature);
    for (size_t v = 0; v < z.size(); ++v) EXPECT_NEAR(f[v], want[v], 0.01) << "token " << v << " T " << temperature;
    p.top_k = 3;  // the three highest logits only, renormalised
    const auto fk = frequencies(z, p, n), wantk = softmax(z, temperature, 3);
    for (size_t v = 0; v < z.size(); ++v) EXPECT_NEAR(fk[v], wantk[v], 0.01) << "token " << v << " top-k 3";
  }
}

TEST(Sampler, RowsAreIndependentAndGreedyTakesTheFirstMaximum) {
  const int B = 7, V = 5;
  std::vector<float> z(B * V, 0.0f);
  for (int b = 0; b < B; ++b) z[b * V + (b % V)] = 3.0f;
  nw::SamplingParams p;
  std::vector<int32_t> once(B), again(B), row(1);
  nw::sample_tokens(z.data(), B, V, p, 9, once.data());
  nw::sample_tokens(z.data(), B, V, p, 9, again.data());
  EXPECT_EQ(once, again);
  p.temperature = 0.0f;
  nw::sample_tokens(z.data(), B, V, p, 0, once.data());
  for (int b = 0; b < B; ++b) EXPECT_EQ(once[b], b % V);
  const std::vector<float> tie = {1.0f, 2.0f, 2.0f};
  nw::sample_tokens(tie.data(), 1, 3, p, 0, row.data());
  EXPECT_EQ(row[0], 1);
}
