// The fused residual add + RMSNorm (ops/residual_rmsnorm.h): float64 gradients through both of its
// outputs (the updated stream and the normalised row), the bits of the unfused sequence it replaces
// (residual_add + rmsnorm_forward; rmsnorm_backward + residual_add) in float32, and its argument checks.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "ops/residual.h"
#include "ops/residual_rmsnorm.h"
#include "ops/rmsnorm.h"

using nwtest::GradInput;
using nwtest::HostTensor;
using nwtest::randn;

namespace {
// Inputs: the stream x0, the branch output f and the gain w. Outputs: s = x0 + f (the stream the op
// leaves in x) and y = rmsnorm(s) * w. The backward starts the stream's gradient at ds and lets the op
// add the norm's gradient; x0 and f both receive that sum.
void check_gradients(bool with_weight) {
  const int64_t N = 4, C = 9;
  HostTensor x0 = randn({N, C}, 41, 1), f = randn({N, C}, 41, 2), w = randn({C}, 41, 3, 0.5);
  for (auto& v : w.data) v += 1.0;
  HostTensor s({N, C}), y({N, C}), rstd({N}), ds({N, C}), dy({N, C});
  HostTensor dx0({N, C}), df({N, C}), dw({C});
  std::vector<GradInput> inputs = {{"x0", &x0, &dx0}, {"f", &f, &df}};
  if (with_weight) inputs.push_back({"w", &w, &dw});
  nwtest::gradcheck(
      inputs, {{"s", &s, &ds}, {"y", &y, &dy}},
      [&] {
        s.data = x0.data;
        nw::residual_rmsnorm_forward(y.t(), rstd.t(), s.t(), f.t(), with_weight ? w.t() : nw::Tensor(), 1e-6f);
        return 0.0;
      },
      [&] {
        HostTensor d = ds;
        nw::residual_rmsnorm_backward(d.t(), with_weight ? dw.t() : nw::Tensor(), dy.t(), s.t(),
                                      with_weight ? w.t() : nw::Tensor(), rstd.t());
        dx0.data = d.data;
        df.data = d.data;
      });
}

std::vector<float> randf(int64_t n, uint64_t seed, double scale = 1.0) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(scale * nw::rng_normal(seed, 3, i));
  return v;
}
nw::Tensor view(std::vector<float>& v, std::vector<int64_t> shape) {
  return nw::Tensor(v.data(), nw::DType::F32, nw::Device::CPU, shape);
}
void expect_bits(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what << ": not bit-identical";
}
}  // namespace

TEST(ResidualRMSNorm, GradientsWithGain) { check_gradients(true); }
TEST(ResidualRMSNorm, GradientsWithoutGain) { check_gradients(false); }

TEST(ResidualRMSNorm, Float32EqualsUnfusedSequenceBitForBit) {
  const int64_t N = 37, C = 200;
  const std::vector<float> x = randf(N * C, 1, 3.0), f = randf(N * C, 2), dy = randf(N * C, 4), d0 = randf(N * C, 5);
  std::vector<float> w = randf(C, 3, 0.2), dw0 = randf(C, 6);
  for (float& v : w) v += 1.f;
  // Unfused: the stream update, the norm; the norm's backward into a temporary, added to the stream's grad.
  std::vector<float> x1 = x, f1 = f, y1(N * C), r1(N), tmp(N * C), d1 = d0, dw1 = dw0, dy1 = dy;
  nw::residual_add(view(x1, {N, C}), view(f1, {N, C}));
  nw::rmsnorm_forward(view(y1, {N, C}), view(r1, {N}), view(x1, {N, C}), view(w, {C}), 1e-6f);
  nw::rmsnorm_backward(view(tmp, {N, C}), view(dw1, {C}), view(dy1, {N, C}), view(x1, {N, C}), view(w, {C}),
                       view(r1, {N}));
  nw::residual_add(view(d1, {N, C}), view(tmp, {N, C}));
  // Fused.
  std::vector<float> x2 = x, f2 = f, y2(N * C), r2(N), d2 = d0, dw2 = dw0, dy2 = dy;
  nw::residual_rmsnorm_forward(view(y2, {N, C}), view(r2, {N}), view(x2, {N, C}), view(f2, {N, C}), view(w, {C}),
                               1e-6f);
  nw::residual_rmsnorm_backward(view(d2, {N, C}), view(dw2, {C}), view(dy2, {N, C}), view(x2, {N, C}), view(w, {C}),
                                view(r2, {N}));
  expect_bits(x2, x1, "updated stream");
  expect_bits(y2, y1, "normalised rows");
  expect_bits(r2, r1, "rstd");
  expect_bits(d2, d1, "stream gradient");
  expect_bits(dw2, dw1, "gain gradient");
  EXPECT_NE(std::memcmp(d2.data(), d0.data(), d0.size() * sizeof(float)), 0) << "the backward added nothing";
}

TEST(ResidualRMSNorm, BadShapesThrowValueError) {
  const int64_t N = 3, C = 4;
  HostTensor x({N, C}), f({N, C}), y({N, C}), rstd({N}), w({C}), f_short({N, C - 1}), rstd_long({N + 1}), w_long({C + 1});
  EXPECT_THROW(nw::residual_rmsnorm_forward(y.t(), rstd.t(), x.t(), f_short.t(), w.t(), 1e-6f), nw::ValueError);
  EXPECT_THROW(nw::residual_rmsnorm_forward(y.t(), rstd_long.t(), x.t(), f.t(), w.t(), 1e-6f), nw::ValueError);
  EXPECT_THROW(nw::residual_rmsnorm_forward(y.t(), rstd.t(), x.t(), f.t(), w_long.t(), 1e-6f), nw::ValueError);
  HostTensor dx({N, C}), dw({C});
  EXPECT_THROW(nw::residual_rmsnorm_backward(dx.t(), nw::Tensor(), y.t(), x.t(), w.t(), rstd.t()), nw::ValueError);
  EXPECT_THROW(nw::residual_rmsnorm_backward(dx.t(), dw.t(), f_short.t(), x.t(), w.t(), rstd.t()), nw::ValueError);
}
