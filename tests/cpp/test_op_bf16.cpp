// bf16 precision on the CPU (core/precision.h): round_to_bf16 itself, then every op whose operands bf16
// mode rounds (linear, grouped linear, attention), run in bf16 and compared with
//  (a) the float64 op on operands rounded to bf16 beforehand, which is what bf16 mode computes up to
//      float32 accumulation (attention also rounds P and dS inside; that error is bounded below), and
//  (b) the same op in fp32: bf16 must differ from it (the operands ARE rounded) by no more than the
//      bf16 error bound of the op's size, 2u * sum_k |a_ik| |b_kj| per output (u = 2^-8, bf16's unit
//      roundoff; each rounded product is off by at most 2u of its size).
// The ops bf16 mode leaves in float32 (norms, router, softmax statistics, losses) have no bf16 path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "core/precision.h"
#include "gradcheck.h"
#include "ops/attention.h"
#include "ops/grouped_linear.h"
#include "ops/linear.h"

using nw::Precision;
using nwtest::HostI32;
using nwtest::HostTensor;
using nwtest::randn;

namespace {
constexpr double kU = 1.0 / 256;  // bf16 unit roundoff: 8 significant bits, round to nearest

struct F32 {
  std::vector<int64_t> shape;
  std::vector<float> data;
  explicit F32(const HostTensor& h) : shape(h.shape), data(h.data.begin(), h.data.end()) {}
  explicit F32(std::vector<int64_t> s) : shape(std::move(s)), data(nwtest::product(shape), 0.0f) {}
  nw::Tensor t() { return nw::Tensor(data.data(), nw::DType::F32, nw::Device::CPU, shape); }
};

// The float64 tensor holding f's values rounded to bf16 (rounded = true) or as they are.
HostTensor widen(const F32& f, bool rounded) {
  HostTensor h(f.shape);
  for (size_t i = 0; i < f.data.size(); ++i) h[i] = rounded ? nw::round_to_bf16(f.data[i]) : f.data[i];
  return h;
}

HostTensor abs_of(const HostTensor& h) {
  HostTensor a = h;
  for (double& v : a.data) v = std::fabs(v);
  return a;
}

double max_abs(const HostTensor& h) {
  double m = 0;
  for (double v : h.data) m = std::max(m, std::fabs(v));
  return m;
}

// max |f - ref| <= rtol * max |ref| (float32 accumulation is all that differs), on a non-trivial ref.
void expect_matches(const F32& f, const HostTensor& ref, double rtol, const char* what) {
  const double mx = max_abs(ref);
  double err = 0;
  for (size_t i = 0; i < ref.data.size(); ++i) err = std::max(err, std::fabs(f.data[i] - ref.data[i]));
  EXPECT_GT(mx, 1e-6) << what << ": the reference is ~0";
  EXPECT_LE(err, rtol * mx) << what << " (max |ref| " << mx << ")";
}

// bf16 differs from fp32 (more than float32 rounding could explain) but within bound[i] everywhere,
// plus a float32-accumulation floor.
void expect_bf16_error(const F32& b, const F32& f, const HostTensor& bound, const char* what) {
  double fmax = 0, worst_excess = -1, max_diff = 0;
  for (float v : f.data) fmax = std::max(fmax, double(std::fabs(v)));
  size_t worst = 0;
  for (size_t i = 0; i < f.data.size(); ++i) {
    const double d = std::fabs(double(b.data[i]) - f.data[i]);
    max_diff = std::max(max_diff, d);
    const double excess = d - (bound[i] + 1e-5 * fmax);
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  EXPECT_GT(max_diff, 1e-4 * fmax) << what << ": bf16 equals fp32, the operands were not rounded";
  EXPECT_LE(worst_excess, 0) << what << ": at " << worst << " bf16 " << b.data[worst] << " fp32 " << f.data[worst]
                             << " bound " << bound[worst];
}

HostTensor scaled(HostTensor h, double s) {
  for (double& v : h.data) v *= s;
  return h;
}
}  // namespace

TEST(OpBf16, RoundToNearestEven) {
  const float one = 1.0f, step = std::ldexp(1.0f, -7);  // bf16 spacing in [1, 2)
  EXPECT_EQ(nw::round_to_bf16(one), one);
  EXPECT_EQ(nw::round_to_bf16(one + step / 2), one);                           // tie: to even (1.0)
  EXPECT_EQ(nw::round_to_bf16(one + 3 * step / 2), one + 2 * step);            // tie: to even (1 + 2 steps)
  EXPECT_EQ(nw::round_to_bf16(one + step / 2 + std::ldexp(1.0f, -20)), one + step);  // above the tie: up
  EXPECT_EQ(nw::round_to_bf16(-(one + step / 2 + std::ldexp(1.0f, -20))), -(one + step));
  EXPECT_EQ(nw::round_to_bf16(0.0f), 0.0f);
  EXPECT_EQ(nw::round_to_bf16(std::numeric_limits<float>::max()), std::numeric_limits<float>::infinity());
  EXPECT_EQ(nw::round_to_bf16(-std::numeric_limits<float>::infinity()), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(nw::round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  // The array form agrees with the scalar one and keeps 8 significant bits.
  F32 x(randn({1000}, 70, 1)), r({1000});
  nw::round_to_bf16(r.data.data(), x.data.data(), 1000);
  for (size_t i = 0; i < x.data.size(); ++i) {
    ASSERT_EQ(r.data[i], nw::round_to_bf16(x.data[i]));
    uint32_t bits;
    std::memcpy(&bits, &r.data[i], 4);
    ASSERT_EQ(bits & 0xffffu, 0u);
    ASSERT_LE(std::fabs(r.data[i] - x.data[i]), kU * std::fabs(x.data[i]));
  }
}

TEST(OpBf16, Linear) {
  const int64_t N = 37, IN = 96, OUT = 40;
  F32 x(randn({N, IN}, 71, 1)), w(randn({OUT, IN}, 71, 2, 0.1)), dy(randn({N, OUT}, 71, 3));
  F32 yb({N, OUT}), dxb({N, IN}), dwb({OUT, IN}), yf({N, OUT}), dxf({N, IN}), dwf({OUT, IN});
  nw::linear_forward(yb.t(), x.t(), w.t(), Precision::BF16);
  nw::linear_backward(dxb.t(), dwb.t(), dy.t(), x.t(), w.t(), Precision::BF16);
  nw::linear_forward(yf.t(), x.t(), w.t());
  nw::linear_backward(dxf.t(), dwf.t(), dy.t(), x.t(), w.t());

  HostTensor xr = widen(x, true), wr = widen(w, true), dyr = widen(dy, true);
  HostTensor y({N, OUT}), dx({N, IN}), dw({OUT, IN});
  nw::linear_forward(y.t(), xr.t(), wr.t());
  nw::linear_backward(dx.t(), dw.t(), dyr.t(), xr.t(), wr.t());
  expect_matches(yb, y, 1e-5, "linear y");
  expect_matches(dxb, dx, 1e-5, "linear dx");
  expect_matches(dwb, dw, 1e-5, "linear dw");

  HostTensor xa = abs_of(widen(x, false)), wa = abs_of(widen(w, false)), dya = abs_of(widen(dy, false));
  HostTensor yab({N, OUT}), dxab({N, IN}), dwab({OUT, IN});  // sum_k |a_ik| |b_kj| of each product
  nw::linear_forward(yab.t(), xa.t(), wa.t());
  nw::linear_backward(dxab.t(), dwab.t(), dya.t(), xa.t(), wa.t());
  expect_bf16_error(yb, yf, scaled(yab, 2 * kU), "linear y");
  expect_bf16_error(dxb, dxf, scaled(dxab, 2 * kU), "linear dx");
  expect_bf16_error(dwb, dwf, scaled(dwab, 2 * kU), "linear dw");
}

TEST(OpBf16, GroupedLinear) {
  const int64_t R = 40, IN = 64, OUT = 24, NE = 4;
  HostI32 offsets({NE + 1}, {0, 17, 17, 30, 40});  // expert 1 has no rows
  F32 x(randn({R, IN}, 72, 1)), w(randn({NE, OUT, IN}, 72, 2, 0.1)), dy(randn({R, OUT}, 72, 3));
  F32 yb({R, OUT}), dxb({R, IN}), dwb({NE, OUT, IN}), yf({R, OUT}), dxf({R, IN}), dwf({NE, OUT, IN});
  nw::grouped_linear_forward(yb.t(), x.t(), w.t(), offsets.t(), Precision::BF16);
  nw::grouped_linear_backward(dxb.t(), dwb.t(), dy.t(), x.t(), w.t(), offsets.t(), Precision::BF16);
  nw::grouped_linear_forward(yf.t(), x.t(), w.t(), offsets.t());
  nw::grouped_linear_backward(dxf.t(), dwf.t(), dy.t(), x.t(), w.t(), offsets.t());

  HostTensor xr = widen(x, true), wr = widen(w, true), dyr = widen(dy, true);
  HostTensor y({R, OUT}), dx({R, IN}), dw({NE, OUT, IN});
  nw::grouped_linear_forward(y.t(), xr.t(), wr.t(), offsets.t());
  nw::grouped_linear_backward(dx.t(), dw.t(), dyr.t(), xr.t(), wr.t(), offsets.t());
  expect_matches(yb, y, 1e-5, "grouped y");
  expect_matches(dxb, dx, 1e-5, "grouped dx");
  expect_matches(dwb, dw, 1e-5, "grouped dw");

  HostTensor xa = abs_of(widen(x, false)), wa = abs_of(widen(w, false)), dya = abs_of(widen(dy, false));
  HostTensor yab({R, OUT}), dxab({R, IN}), dwab({NE, OUT, IN});
  nw::grouped_linear_forward(yab.t(), xa.t(), wa.t(), offsets.t());
  nw::grouped_linear_backward(dxab.t(), dwab.t(), dya.t(), xa.t(), wa.t(), offsets.t());
  expect_bf16_error(yb, yf, scaled(yab, 2 * kU), "grouped y");
  expect_bf16_error(dxb, dxf, scaled(dxab, 2 * kU), "grouped dx");
  expect_bf16_error(dwb, dwf, scaled(dwab, 2 * kU), "grouped dw");
}

// Attention in bf16: against the float64 op on rounded q, k, v (and dy), the only difference is the
// rounding of P (forward) and of P and dS (backward). Each rounded p is off by at most u p, so a forward
// output moves by at most u sum_s p_s |v_s| <= u max |v|. In the backward every dv, dq, dk element sums
// up to T such rounded terms; the bound used is u sqrt(T) times the largest element of each gradient
// (the terms' signs are independent, so their errors add like a random walk). lse is fp32 from the
// rounded scores: it matches the float64 reference to float32 accuracy.
TEST(OpBf16, Attention) {
  const int64_t B = 2, T = 24, H = 4, KVH = 2, D = 16;
  for (int window : {0, 7}) {
    SCOPED_TRACE(window);
    F32 q(randn({B, T, H, D}, 73, 1)), k(randn({B, T, KVH, D}, 73, 2)), v(randn({B, T, KVH, D}, 73, 3));
    F32 dy(randn({B, T, H, D}, 73, 4));
    F32 yb({B, T, H, D}), lb({B, H, T}), yf({B, T, H, D}), lf({B, H, T});
    nw::attention_forward(yb.t(), lb.t(), q.t(), k.t(), v.t(), window, Precision::BF16);
    nw::attention_forward(yf.t(), lf.t(), q.t(), k.t(), v.t(), window);
    F32 dqb({B, T, H, D}), dkb({B, T, KVH, D}), dvb({B, T, KVH, D});
    F32 dqf({B, T, H, D}), dkf({B, T, KVH, D}), dvf({B, T, KVH, D});
    nw::attention_backward(dqb.t(), dkb.t(), dvb.t(), dy.t(), q.t(), k.t(), v.t(), yb.t(), lb.t(), window,
                           Precision::BF16);
    nw::attention_backward(dqf.t(), dkf.t(), dvf.t(), dy.t(), q.t(), k.t(), v.t(), yf.t(), lf.t(), window);

    HostTensor qr = widen(q, true), kr = widen(k, true), vr = widen(v, true), dyr = widen(dy, true);
    HostTensor y({B, T, H, D}), lse({B, H, T});
    nw::attention_forward(y.t(), lse.t(), qr.t(), kr.t(), vr.t(), window);
    expect_matches(lb, lse, 1e-6, "attention lse");
    const double ytol = kU * max_abs(vr) / max_abs(y) + 1e-5;
    expect_matches(yb, y, ytol, "attention y");
    HostTensor yb64 = widen(yb, false), lb64 = widen(lb, false);
    HostTensor dq({B, T, H, D}), dk({B, T, KVH, D}), dv({B, T, KVH, D});
    nw::attention_backward(dq.t(), dk.t(), dv.t(), dyr.t(), qr.t(), kr.t(), vr.t(), yb64.t(), lb64.t(), window);
    const double gtol = kU * std::sqrt(double(T));
    expect_matches(dqb, dq, gtol, "attention dq");
    expect_matches(dkb, dk, gtol, "attention dk");
    expect_matches(dvb, dv, gtol, "attention dv");

    // It IS rounded: every output moves away from fp32 by more than float32 rounding.
    for (auto [b, f, what] : {std::tuple{&yb, &yf, "y"}, {&dqb, &dqf, "dq"}, {&dkb, &dkf, "dk"}, {&dvb, &dvf, "dv"}}) {
      double fmax = 0, diff = 0;
      for (size_t i = 0; i < f->data.size(); ++i) {
        fmax = std::max(fmax, double(std::fabs(f->data[i])));
        diff = std::max(diff, double(std::fabs(b->data[i] - f->data[i])));
      }
      EXPECT_GT(diff, 1e-4 * fmax) << "attention " << what << ": bf16 equals fp32";
    }
  }
}

TEST(OpBf16, RejectsFloat64) {
  HostTensor x({2, 3}), w({4, 3}), y({2, 4});
  EXPECT_THROW(nw::linear_forward(y.t(), x.t(), w.t(), Precision::BF16), nw::ValueError);
}
