// exp_fast / tanh_fast (csrc/cpu/fast_math.h) against libm, and NaN propagation.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "cpu/fast_math.h"

namespace {

TEST(FastMath, ExpMatchesLibm) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double want = std::exp(double(x));
    worst = std::max(worst, std::fabs(nw::cpu::exp_fast(x) - want) / want);
  }
  EXPECT_LT(worst, 3e-7);  // about 2 ulp
  EXPECT_EQ(nw::cpu::exp_fast(0.0f), 1.0f);
}

TEST(FastMath, TanhMatchesLibm) {
  double worst_abs = 0, worst_rel_small = 0;
  for (float x = -12.0f; x <= 12.0f; x += 0.00731f) {
    const double want = std::tanh(double(x)), got = nw::cpu::tanh_fast(x);
    worst_abs = std::max(worst_abs, std::fabs(got - want));
    if (std::fabs(x) < 0.625f && x != 0.0f) worst_rel_small = std::max(worst_rel_small, std::fabs(got - want) / std::fabs(want));
  }
  EXPECT_LT(worst_abs, 3e-7);
  EXPECT_LT(worst_rel_small, 3e-7);
  EXPECT_EQ(nw::cpu::tanh_fast(1e-30f), 1e-30f);
  EXPECT_NEAR(nw::cpu::tanh_fast(50.0f), 1.0f, 6e-8);  // saturates within one ulp
  EXPECT_NEAR(nw::cpu::tanh_fast(-50.0f), -1.0f, 6e-8);
}

TEST(FastMath, NanPropagates) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(nw::cpu::exp_fast(nan)));
  EXPECT_TRUE(std::isnan(nw::cpu::tanh_fast(nan)));
}

TEST(FastMath, DoubleIsLibm) {
  EXPECT_EQ(nw::cpu::exp_fast(0.3), std::exp(0.3));
  EXPECT_EQ(nw::cpu::tanh_fast(0.3), std::tanh(0.3));
}

}  // namespace
