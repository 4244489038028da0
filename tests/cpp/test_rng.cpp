// The counter-based RNG (core/rng.h): reference values of its SplitMix64 / FNV-1a building blocks,
// determinism, independence of seeds, streams and counters, and the moments of the uniform and
// normal draws over 100k samples.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "core/rng.h"

TEST(Rng, BuildingBlocksMatchReferenceValues) {
  // The first SplitMix64 output from state 0 (state += golden gamma, then the finaliser).
  EXPECT_EQ(nw::mix64(0x9e3779b97f4a7c15ULL), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(nw::mix64(0), 0u);
  // FNV-1a 64-bit test vectors.
  EXPECT_EQ(nw::stream_of(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(nw::stream_of("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_NE(nw::stream_of("layers.0.attn.wq"), nw::stream_of("layers.0.attn.wk"));
}

TEST(Rng, Deterministic) {
  for (uint64_t i = 0; i < 1000; ++i) {
    ASSERT_EQ(nw::rng_bits(7, 3, i), nw::rng_bits(7, 3, i));
    ASSERT_EQ(nw::rng_uniform(7, 3, i), nw::rng_uniform(7, 3, i));
    ASSERT_EQ(nw::rng_normal(7, 3, i), nw::rng_normal(7, 3, i));
  }
  // A counter RNG: element i does not depend on which elements were drawn before it.
  std::vector<double> forward, backward(100);
  for (uint64_t i = 0; i < 100; ++i) forward.push_back(nw::rng_normal(1, 2, i));
  for (int64_t i = 99; i >= 0; --i) backward[i] = nw::rng_normal(1, 2, i);
  EXPECT_EQ(forward, backward);
}

TEST(Rng, SeedsStreamsAndCountersDiffer) {
  const int n = 10000;
  std::set<uint64_t> all;
  int same_stream = 0, same_seed = 0;
  for (uint64_t i = 0; i < n; ++i) {
    all.insert(nw::rng_bits(1, 0, i));
    all.insert(nw::rng_bits(1, 1, i));
    all.insert(nw::rng_bits(2, 0, i));
    same_stream += nw::rng_bits(1, 0, i) == nw::rng_bits(1, 1, i);
    same_seed += nw::rng_bits(1, 0, i) == nw::rng_bits(2, 0, i);
  }
  EXPECT_EQ(same_stream, 0);
  EXPECT_EQ(same_seed, 0);
  EXPECT_EQ(all.size(), size_t(3 * n)) << "64-bit outputs of distinct (seed, stream, i) should not collide";
  // Streams are not shifted copies of each other (stream s, counter i+1 vs stream s+1, counter i).
  int shifted = 0;
  for (uint64_t i = 0; i < 1000; ++i) shifted += nw::rng_bits(1, 5, i + 1) == nw::rng_bits(1, 6, i);
  EXPECT_EQ(shifted, 0);
}

TEST(Rng, UniformInOpenUnitIntervalWithRightMoments) {
  const int n = 100000;
  double sum = 0, sum2 = 0, lo = 1, hi = 0, cross = 0;
  int below_tenth = 0;
  for (int i = 0; i < n; ++i) {
    const double u = nw::rng_uniform(123, 4, i);
    ASSERT_GT(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    sum2 += u * u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    below_tenth += u < 0.1;
    cross += (u - 0.5) * (nw::rng_uniform(123, 5, i) - 0.5);  // adjacent streams uncorrelated
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  EXPECT_NEAR(mean, 0.5, 0.005);          // sd of the mean ~0.0009
  EXPECT_NEAR(var, 1.0 / 12.0, 0.002);    // sd ~0.0003
  EXPECT_NEAR(below_tenth / double(n), 0.1, 0.005);
  EXPECT_LT(lo, 1e-3);
  EXPECT_GT(hi, 1 - 1e-3);
  EXPECT_NEAR(cross / n / (1.0 / 12.0), 0.0, 0.02);  // correlation, sd ~0.003
}

TEST(Rng, NormalMomentsOver100k) {
  const int n = 100000;
  double sum = 0, sum2 = 0, sum3 = 0, sum4 = 0;
  int within_one = 0;
  for (int i = 0; i < n; ++i) {
    const double z = nw::rng_normal(99, 7, i);
    ASSERT_TRUE(std::isfinite(z));
    sum += z;
    sum2 += z * z;
    sum3 += z * z * z;
    sum4 += z * z * z * z;
    within_one += std::fabs(z) < 1.0;
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.02);                  // sd ~0.003
  EXPECT_NEAR(var, 1.0, 0.03);                   // sd ~0.0045
  EXPECT_NEAR(sum3 / n, 0.0, 0.05);              // skewness, sd ~0.008
  EXPECT_NEAR(sum4 / n, 3.0, 0.15);              // kurtosis, sd ~0.03
  EXPECT_NEAR(within_one / double(n), 0.6827, 0.01);
}
