// Gradient checks in float64 for every op's backward (central finite differences through gradcheck.h),
// a few forward references where a consistent-but-wrong forward/backward pair would otherwise pass
// (attention windows and GQA, the soft-capped loss), and the overwrite/accumulate contracts of the
// backwards that the model's gradient accumulation relies on.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gradcheck.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/grouped_linear.h"
#include "ops/linear.h"
#include "ops/moe_dispatch.h"
#include "ops/moe_router.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"

using nwtest::GradInput;
using nwtest::GradOutput;
using nwtest::HostI32;
using nwtest::HostTensor;
using nwtest::randn;
using nwtest::Weight;

// ---------------------------------------------------------------------------------------------
// The harness itself must catch a wrong sign and a missing term (y = x^2 + 3x elementwise).
namespace {
void check_quadratic(double sign_of_linear_term, double linear_coef) {
  HostTensor x = randn({6}, 1, 1), y({6}), dy({6}), dx({6});
  nwtest::gradcheck(
      {{"x", &x, &dx}}, {{"y", &y, &dy}},
      [&] {
        for (int i = 0; i < 6; ++i) y[i] = x[i] * x[i] + 3.0 * x[i];
        return 0.0;
      },
      [&] {
        for (int i = 0; i < 6; ++i) dx[i] = (2.0 * x[i] + sign_of_linear_term * linear_coef) * dy[i];
      });
}
}  // namespace

TEST(GradCheckHarness, AcceptsCorrectGradient) { check_quadratic(+1.0, 3.0); }

TEST(GradCheckHarness, CatchesWrongSign) {
  EXPECT_NONFATAL_FAILURE(check_quadratic(-1.0, 3.0), "gradient of x is wrong");
}

TEST(GradCheckHarness, CatchesMissingTerm) {
  EXPECT_NONFATAL_FAILURE(check_quadratic(+1.0, 0.0), "gradient of x is wrong");
}

TEST(GradCheckHarness, CatchesSmallRelativeError) {
  EXPECT_NONFATAL_FAILURE(check_quadratic(+1.0, 3.0 * (1.0 + 1e-4)), "gradient of x is wrong");
}

// ---------------------------------------------------------------------------------------------
TEST(OpGradients, EmbeddingWithRepeatedTokens) {
  const int64_t V = 6, C = 5, N = 9;
  HostTensor table = randn({V, C}, 11, 1), out({N, C}), dout({N, C}), dtable({V, C});
  HostI32 tokens({N}, {2, 0, 2, 5, 3, 2, 0, 5, 1});  // 2 three times, 0 and 5 twice, 4 never
  nwtest::gradcheck(
      {{"table", &table, &dtable}}, {{"out", &out, &dout}},
      [&] {
        nw::embedding_forward(out.t(), table.t(), tokens.t());
        return 0.0;
      },
      [&] { nw::embedding_backward(dtable.t(), dout.t(), tokens.t()); });
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_EQ(dtable[4 * C + c], 0.0) << "an unused token's row must get no gradient";
    EXPECT_DOUBLE_EQ(dtable[2 * C + c], dout[0 * C + c] + dout[2 * C + c] + dout[5 * C + c]);
  }
}

namespace {
void check_rmsnorm(bool with_weight) {
  const int64_t N = 5, C = 8;
  HostTensor x = randn({N, C}, 12, 1), y({N, C}), dy({N, C}), dx({N, C}), rstd({N});
  HostTensor w = randn({C}, 12, 2, 0.5), dw({C});
  for (auto& v : w.data) v += 1.0;
  std::vector<GradInput> inputs = {{"x", &x, &dx}};
  if (with_weight) inputs.push_back({"w", &w, &dw});
  const nw::Tensor wt = with_weight ? w.t() : nw::Tensor();
  nwtest::gradcheck(
      inputs, {{"y", &y, &dy}},
      [&] {
        nw::rmsnorm_forward(y.t(), rstd.t(), x.t(), with_weight ? w.t() : nw::Tensor(), 1e-6f);
        return 0.0;
      },
      [&] { nw::rmsnorm_backward(dx.t(), with_weight ? dw.t() : nw::Tensor(), dy.t(), x.t(), wt, rstd.t()); });
  // Forward reference: y = x / rms(x) * w.
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    const double r = 1.0 / std::sqrt(ss / C + 1e-6);
    EXPECT_NEAR(rstd[n], r, 1e-12);
    for (int64_t c = 0; c < C; ++c) EXPECT_NEAR(y[n * C + c], x[n * C + c] * r * (with_weight ? w[c] : 1.0), 1e-12);
  }
}
}  // namespace

TEST(OpGradients, RMSNormWithWeight) { check_rmsnorm(true); }
TEST(OpGradients, RMSNormWithoutWeight) { check_rmsnorm(false); }

TEST(OpGradients, Linear) {
  const int64_t N = 5, IN = 6, OUT = 4;
  HostTensor x = randn({N, IN}, 13, 1), w = randn({OUT, IN}, 13, 2), y({N, OUT}), dy({N, OUT});
  HostTensor dx({N, IN}), dw({OUT, IN});
  nwtest::gradcheck(
      {{"x", &x, &dx}, {"w", &w, &dw}}, {{"y", &y, &dy}},
      [&] {
        nw::linear_forward(y.t(), x.t(), w.t());
        return 0.0;
      },
      [&] { nw::linear_backward(dx.t(), dw.t(), dy.t(), x.t(), w.t()); });
  // Forward reference: y = x W^T (W stored (out, in)).
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OUT; ++o) {
      double s = 0;
      for (int64_t i = 0; i < IN; ++i) s += x[n * IN + i] * w[o * IN + i];
      EXPECT_NEAR(y[n * OUT + o], s, 1e-12);
    }
}

TEST(OpGradients, Rope) {
  const int64_t B = 2, T = 5, H = 3, D = 8;
  HostTensor cos({T + 1, D / 2}), sin({T + 1, D / 2});  // tables may be longer than the sequence
  nw::rope_tables(cos.t(), sin.t(), 100.0);
  HostTensor x = randn({B, T, H, D}, 14, 1), y({B, T, H, D}), dy({B, T, H, D}), dx({B, T, H, D});
  nwtest::gradcheck(
      {{"x", &x, &dx}}, {{"y", &y, &dy}},
      [&] {
        y.data = x.data;
        nw::rope_forward(y.t(), cos.t(), sin.t());
        return 0.0;
      },
      [&] {
        dx.data = dy.data;
        nw::rope_backward(dx.t(), cos.t(), sin.t());
      });
  // Forward reference: pair (i, i + D/2) at position t rotated by angle t * base^(-2i/D).
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < D / 2; ++i) {
          const int64_t o = ((b * T + t) * H + h) * D;
          const double ang = t * std::pow(100.0, -2.0 * i / D), c = std::cos(ang), s = std::sin(ang);
          EXPECT_NEAR(cos[t * (D / 2) + i], c, 1e-15);
          EXPECT_NEAR(y[o + i], x[o + i] * c + x[o + i + D / 2] * s, 1e-12);
          EXPECT_NEAR(y[o + i + D / 2], -x[o + i] * s + x[o + i + D / 2] * c, 1e-12);
        }
}

// ---------------------------------------------------------------------------------------------
namespace {
// Naive causal GQA attention with an optional window, as the reference for the forward.
void attention_reference(std::vector<double>& y, const HostTensor& q, const HostTensor& k, const HostTensor& v,
                         int window) {
  const int64_t B = q.shape[0], T = q.shape[1], H = q.shape[2], D = q.shape[3], KVH = k.shape[2];
  y.assign(q.data.size(), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t kvh = h / (H / KVH);
        const int64_t s0 = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
        std::vector<double> p;
        double mx = -1e300;
        for (int64_t s = s0; s <= t; ++s) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += q[((b * T + t) * H + h) * D + d] * k[((b * T + s) * KVH + kvh) * D + d];
          p.push_back(dot / std::sqrt(double(D)));
          mx = std::max(mx, p.back());
        }
        double sum = 0;
        for (double& e : p) sum += (e = std::exp(e - mx));
        for (int64_t s = s0; s <= t; ++s)
          for (int64_t d = 0; d < D; ++d)
            y[((b * T + t) * H + h) * D + d] += p[s - s0] / sum * v[((b * T + s) * KVH + kvh) * D + d];
      }
}

void check_attention(int window) {
  const int64_t B = 2, T = 7, H = 4, KVH = 2, D = 4;
  HostTensor q = randn({B, T, H, D}, 15, 1), k = randn({B, T, KVH, D}, 15, 2), v = randn({B, T, KVH, D}, 15, 3);
  HostTensor y({B, T, H, D}), dy({B, T, H, D}), lse({B, H, T});
  HostTensor dq({B, T, H, D}), dk({B, T, KVH, D}), dv({B, T, KVH, D});
  nwtest::gradcheck(
      {{"q", &q, &dq}, {"k", &k, &dk}, {"v", &v, &dv}}, {{"y", &y, &dy}},
      [&] {
        nw::attention_forward(y.t(), lse.t(), q.t(), k.t(), v.t(), window);
        return 0.0;
      },
      [&] { nw::attention_backward(dq.t(), dk.t(), dv.t(), dy.t(), q.t(), k.t(), v.t(), y.t(), lse.t(), window); });
  std::vector<double> ref;
  attention_reference(ref, q, k, v, window);
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(y[i], ref[i], 1e-12) << "attention output " << i;
  // The forward's lse is log sum_s exp(q.k_s / sqrt(D)) over the visible keys; check position 0 (sees only itself).
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += q[((b * T) * H + h) * D + d] * k[((b * T) * KVH + h / 2) * D + d];
      EXPECT_NEAR(lse[(b * H + h) * T + 0], dot / 2.0, 1e-12);
    }
}
}  // namespace

TEST(OpGradients, AttentionGQAFullCausal) { check_attention(0); }
TEST(OpGradients, AttentionGQASlidingWindow3) { check_attention(3); }

TEST(OpGradients, AttentionWindowChangesOutput) {
  // Guards the reference itself: window 3 must differ from full causal at late positions only.
  const int64_t B = 1, T = 7, H = 4, KVH = 2, D = 4;
  HostTensor q = randn({B, T, H, D}, 16, 1), k = randn({B, T, KVH, D}, 16, 2), v = randn({B, T, KVH, D}, 16, 3);
  HostTensor y0({B, T, H, D}), y3({B, T, H, D}), lse({B, H, T});
  nw::attention_forward(y0.t(), lse.t(), q.t(), k.t(), v.t(), 0);
  nw::attention_forward(y3.t(), lse.t(), q.t(), k.t(), v.t(), 3);
  for (int64_t i = 0; i < 3 * H * D; ++i) EXPECT_EQ(y0[i], y3[i]) << "positions < window see the same keys";
  double diff = 0;
  for (int64_t i = 3 * H * D; i < y0.numel(); ++i) diff = std::max(diff, std::fabs(y0[i] - y3[i]));
  EXPECT_GT(diff, 1e-3);
}

// ---------------------------------------------------------------------------------------------
TEST(OpGradients, ActivationReLU2) {
  const int64_t N = 4, H = 6;
  HostTensor pre = randn({N, H}, 17, 1), h({N, H}), dh({N, H}), dpre({N, H});
  for (auto& x : pre.data) x = (x >= 0 ? 1.0 : -1.0) * (0.05 + std::fabs(x));  // away from the kink at 0
  nwtest::gradcheck(
      {{"pre", &pre, &dpre}}, {{"h", &h, &dh}},
      [&] {
        nw::activation_forward(nw::Activation::ReLU2, h.t(), pre.t());
        return 0.0;
      },
      [&] { nw::activation_backward(nw::Activation::ReLU2, dpre.t(), dh.t(), pre.t()); });
  for (int64_t i = 0; i < pre.numel(); ++i) EXPECT_DOUBLE_EQ(h[i], pre[i] > 0 ? pre[i] * pre[i] : 0.0);
}

TEST(OpGradients, ActivationSwiGLU) {
  const int64_t N = 4, H = 5;
  HostTensor pre = randn({N, 2 * H}, 18, 1, 2.0), h({N, H}), dh({N, H}), dpre({N, 2 * H});
  nwtest::gradcheck(
      {{"pre", &pre, &dpre}}, {{"h", &h, &dh}},
      [&] {
        nw::activation_forward(nw::Activation::SwiGLU, h.t(), pre.t());
        return 0.0;
      },
      [&] { nw::activation_backward(nw::Activation::SwiGLU, dpre.t(), dh.t(), pre.t()); });
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < H; ++j) {
      const double g = pre[n * 2 * H + j], u = pre[n * 2 * H + H + j];
      EXPECT_NEAR(h[n * H + j], g / (1.0 + std::exp(-g)) * u, 1e-14);
    }
}

// ---------------------------------------------------------------------------------------------
namespace {
// weighted: L = sum_n w_n * loss_n with random weights of both signs, passed to the op as its per-token
// weights (the harness's dy); otherwise L = sum_n loss_n with no weights tensor.
void check_cross_entropy(float cap, bool weighted) {
  const int64_t N = 6, V = 7;
  HostTensor logits = randn({N, V}, 19, 1, 8.0);  // large enough that the soft-cap bends them
  HostTensor losses({N}), dlosses({N}), dlogits({N, V}), scratch({N});
  HostI32 targets({N}, {3, -1, 0, 6, -1, 2});
  HostTensor one({1}, 1.0);  // grad_per_token
  nwtest::gradcheck(
      {{"logits", &logits, &dlogits}}, {{"losses", &losses, &dlosses, weighted ? Weight::Random : Weight::Ones}},
      [&] {
        nw::softcap_cross_entropy(losses.t(), nw::Tensor(), logits.t(), targets.t(), nw::Tensor(), cap, nw::Tensor());
        return 0.0;
      },
      [&] {
        nw::softcap_cross_entropy(scratch.t(), dlogits.t(), logits.t(), targets.t(),
                                  weighted ? dlosses.t() : nw::Tensor(), cap, one.t());
      });
  if (weighted) {  // the weights must have both signs for the check to mean "any sign"
    EXPECT_LT(*std::min_element(dlosses.data.begin(), dlosses.data.end()), 0.0);
    EXPECT_GT(*std::max_element(dlosses.data.begin(), dlosses.data.end()), 0.0);
  }
  // Forward reference, and the ignored targets.
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      EXPECT_EQ(losses[n], 0.0);
      for (int64_t v = 0; v < V; ++v) EXPECT_EQ(dlogits[n * V + v], 0.0);
      continue;
    }
    std::vector<double> c(V);
    double mx = -1e300, sum = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double z = logits[n * V + v];
      c[v] = cap > 0 ? cap * std::tanh(z / cap) : z;
      mx = std::max(mx, c[v]);
    }
    for (int64_t v = 0; v < V; ++v) sum += std::exp(c[v] - mx);
    EXPECT_NEAR(losses[n], mx + std::log(sum) - c[targets[n]], 1e-12);
  }
}
}  // namespace

TEST(OpGradients, SoftcapCrossEntropyCap15) { check_cross_entropy(15.0f, false); }
TEST(OpGradients, SoftcapCrossEntropyNoCap) { check_cross_entropy(0.0f, false); }
TEST(OpGradients, SoftcapCrossEntropyWeightedCap15) { check_cross_entropy(15.0f, true); }
TEST(OpGradients, SoftcapCrossEntropyWeightedNoCap) { check_cross_entropy(0.0f, true); }

TEST(OpGradients, SoftcapCrossEntropyGradScaleAndAliasing) {
  const int64_t N = 4, V = 5;
  HostTensor logits = randn({N, V}, 20, 1, 6.0), losses({N}), d1({N, V}), dq({N, V});
  HostI32 targets({N}, {1, 4, -1, 0});
  HostTensor one({1}, 1.0), quarter({1}, 0.25);  // grad_per_token
  nw::softcap_cross_entropy(losses.t(), d1.t(), logits.t(), targets.t(), nw::Tensor(), 15.0f, one.t());
  nw::softcap_cross_entropy(losses.t(), dq.t(), logits.t(), targets.t(), nw::Tensor(), 15.0f, quarter.t());
  HostTensor alias = logits;  // dlogits may overwrite the logits they are computed from
  nw::softcap_cross_entropy(losses.t(), alias.t(), alias.t(), targets.t(), nw::Tensor(), 15.0f, one.t());
  double mx = 0;
  for (int64_t i = 0; i < N * V; ++i) {
    EXPECT_NEAR(dq[i], 0.25 * d1[i], 1e-15);
    EXPECT_EQ(alias[i], d1[i]);
    mx = std::max(mx, std::fabs(d1[i]));
  }
  EXPECT_GT(mx, 1e-2);
  // Row sums of the uncapped-softmax gradient are 0; with the cap each term is scaled by 1 - tanh^2,
  // so just check each row with a target has a negative entry at the target.
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] >= 0) {
      EXPECT_LT(d1[n * V + targets[n]], 0.0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
namespace {
struct RouterCase {
  int B = 2, T = 5, E = 4, K = 2;
  float route_scale = 1.0f, alpha = 0.1f;
  Weight gate_weight = Weight::Random;
  uint64_t seed = 21;
  bool expect_nonzero = true;
};

void check_router(const RouterCase& rc) {
  const int64_t N = int64_t(rc.B) * rc.T, E = rc.E, K = rc.K;
  HostTensor logits = randn({N, E}, rc.seed, 1, 1.5);
  HostTensor bias({E});
  const double b0[] = {0.05, -0.12, 0.2, 0.0, -0.07, 0.1};
  for (int64_t e = 0; e < E; ++e) bias[e] = b0[e % 6];
  HostTensor scores({N, E}), gates({N, K}), dgates({N, K}), dlogits({N, E});
  HostI32 topk({N, K});
  // The selection must not flip under the finite-difference steps: s + b of the K-th and (K+1)-th
  // choices must be well apart (and every pair apart, so the order within the top-k is fixed too).
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> key(E);
    for (int64_t e = 0; e < E; ++e) key[e] = 1.0 / (1.0 + std::exp(-logits[n * E + e])) + bias[e];
    std::sort(key.begin(), key.end());
    for (int64_t e = 0; e + 1 < E; ++e) ASSERT_GT(key[e + 1] - key[e], 1e-4) << "near tie at token " << n;
  }
  double balance = 0;
  HostTensor grad_scale({1}, 1.0);
  nwtest::gradcheck(
      {{"logits", &logits, &dlogits, rc.expect_nonzero}}, {{"gates", &gates, &dgates, rc.gate_weight}},
      [&] {
        return balance = nw::moe_router_forward(scores.t(), topk.t(), gates.t(), logits.t(), bias.t(), rc.B,
                                                rc.route_scale, rc.alpha);
      },
      [&] {
        nw::moe_router_backward(dlogits.t(), dgates.t(), scores.t(), topk.t(), rc.B, rc.route_scale, rc.alpha, grad_scale.t());
      });
  // Gates of each token sum to route_scale.
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t j = 0; j < K; ++j) s += gates[n * K + j];
    EXPECT_NEAR(s, rc.route_scale, 1e-12);
  }
  EXPECT_GT(balance, 0.0);
}
}  // namespace

TEST(OpGradients, RouterTop2WithBiasAndBalance) {
  RouterCase rc;
  rc.route_scale = 2.5f;
  check_router(rc);
}

TEST(OpGradients, RouterBalanceLossOnly) {
  // dgates = 0: the whole gradient is the balance term's.
  RouterCase rc;
  rc.gate_weight = Weight::Zero;
  rc.alpha = 1.0f;
  rc.seed = 22;
  check_router(rc);
}

TEST(OpGradients, RouterTop1) {
  // With one expert the gate is route_scale whatever the logits: only the balance term has a gradient.
  RouterCase rc;
  rc.K = 1;
  rc.seed = 23;
  check_router(rc);
}

TEST(OpGradients, RouterTopAll) {
  // top_k = E: every f_i = 1, the balance loss is the constant alpha and the gates are s / sum(s).
  RouterCase rc;
  rc.K = rc.E;
  rc.B = 1;
  rc.T = 6;
  rc.seed = 24;
  check_router(rc);
}

TEST(OpGradients, RouterGradScaleOnlyScalesBalanceTerm) {
  const int B = 2, T = 4, E = 4, K = 2;
  const int64_t N = B * T;
  HostTensor logits = randn({N, E}, 25, 1, 1.5), bias({E}), scores({N, E}), gates({N, K});
  HostTensor dgates = randn({N, K}, 25, 2), d1({N, E}), d3({N, E}), d0({N, E}), dnob({N, E});
  HostI32 topk({N, K});
  nw::moe_router_forward(scores.t(), topk.t(), gates.t(), logits.t(), bias.t(), B, 1.0f, 0.5f);
  HostTensor one({1}, 1.0), three({1}, 3.0), zero({1}, 0.0);  // grad_scale
  nw::moe_router_backward(d1.t(), dgates.t(), scores.t(), topk.t(), B, 1.0f, 0.5f, one.t());
  nw::moe_router_backward(d3.t(), dgates.t(), scores.t(), topk.t(), B, 1.0f, 0.5f, three.t());
  nw::moe_router_backward(d0.t(), dgates.t(), scores.t(), topk.t(), B, 1.0f, 0.5f, zero.t());
  nw::moe_router_backward(dnob.t(), dgates.t(), scores.t(), topk.t(), B, 1.0f, 0.0f, one.t());
  double bal = 0;
  for (int64_t i = 0; i < N * E; ++i) {
    EXPECT_NEAR(d0[i], dnob[i], 1e-15) << "grad_scale 0 must drop the balance term";
    EXPECT_NEAR(d3[i] - d0[i], 3.0 * (d1[i] - d0[i]), 1e-12);
    bal = std::max(bal, std::fabs(d1[i] - d0[i]));
  }
  EXPECT_GT(bal, 1e-4);
  HostTensor two_scales({2}, 1.0);
  EXPECT_THROW(nw::moe_router_backward(d1.t(), dgates.t(), scores.t(), topk.t(), B, 1.0f, 0.5f, nw::Tensor()),
               nw::ValueError) << "no grad_scale";
  EXPECT_THROW(nw::moe_router_backward(d1.t(), dgates.t(), scores.t(), topk.t(), B, 1.0f, 0.5f, two_scales.t()),
               nw::ValueError) << "grad_scale of two elements";
}

// ---------------------------------------------------------------------------------------------
namespace {
// Five tokens, two slots each; expert 3 of 4 gets no token.
struct Routing {
  static constexpr int64_t N = 5, K = 2, E = 4;
  HostI32 topk{{N, K}, {0, 2, 2, 0, 1, 2, 2, 1, 0, 1}};
  HostI32 counts{{E}}, offsets{{E + 1}}, row_of_slot{{N * K}}, token_of_row{{N * K}};
  Routing() { nw::moe_dispatch(counts.t(), offsets.t(), row_of_slot.t(), token_of_row.t(), topk.t()); }
};
}  // namespace

TEST(OpGradients, MoECombine) {
  Routing r;
  const int64_t N = Routing::N, K = Routing::K, C = 3;
  HostTensor ye = randn({N * K, C}, 26, 1), gates = randn({N, K}, 26, 2), y({N, C}), dy({N, C});
  HostTensor dye({N * K, C}), dgates({N, K});
  nwtest::gradcheck(
      {{"ye", &ye, &dye}, {"gates", &gates, &dgates}}, {{"y", &y, &dy}},
      [&] {
        nw::moe_combine(y.t(), ye.t(), gates.t(), r.row_of_slot.t());
        return 0.0;
      },
      [&] { nw::moe_combine_backward(dye.t(), dgates.t(), dy.t(), ye.t(), gates.t(), r.row_of_slot.t()); });
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += gates[n * K + k] * ye[r.row_of_slot[n * K + k] * C + c];
      EXPECT_NEAR(y[n * C + c], s, 1e-14);
    }
}

TEST(OpGradients, MoEGather) {
  Routing r;
  const int64_t N = Routing::N, K = Routing::K, C = 3;
  HostTensor x = randn({N, C}, 27, 1), xe({N * K, C}), dxe({N * K, C}), dx({N, C});
  nwtest::gradcheck(
      {{"x", &x, &dx}}, {{"xe", &xe, &dxe}},
      [&] {
        nw::moe_gather(xe.t(), x.t(), r.token_of_row.t());
        return 0.0;
      },
      [&] { nw::moe_gather_backward(dx.t(), dxe.t(), r.row_of_slot.t()); });
  for (int64_t row = 0; row < N * K; ++row)
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(xe[row * C + c], x[r.token_of_row[row] * C + c]);
}

TEST(OpGradients, GroupedLinearWithEmptyExpert) {
  const int64_t R = 7, IN = 5, OUT = 4, E = 3;
  HostI32 offsets({E + 1}, {0, 3, 3, 7});  // expert 1 receives no rows
  HostTensor x = randn({R, IN}, 28, 1), w = randn({E, OUT, IN}, 28, 2), y({R, OUT}), dy({R, OUT});
  HostTensor dx({R, IN}), dw({E, OUT, IN});
  nwtest::gradcheck(
      {{"x", &x, &dx}, {"w", &w, &dw}}, {{"y", &y, &dy}},
      [&] {
        nw::grouped_linear_forward(y.t(), x.t(), w.t(), offsets.t());
        return 0.0;
      },
      [&] { nw::grouped_linear_backward(dx.t(), dw.t(), dy.t(), x.t(), w.t(), offsets.t()); });
  for (int64_t i = 0; i < OUT * IN; ++i) EXPECT_EQ(dw[1 * OUT * IN + i], 0.0) << "the empty expert gets no gradient";
  // Forward reference: row r goes through the expert whose range holds it.
  for (int64_t row = 0; row < R; ++row) {
    const int64_t e = row < 3 ? 0 : 2;
    for (int64_t o = 0; o < OUT; ++o) {
      double s = 0;
      for (int64_t i = 0; i < IN; ++i) s += x[row * IN + i] * w[(e * OUT + o) * IN + i];
      EXPECT_NEAR(y[row * OUT + o], s, 1e-12);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Overwrite/accumulate contracts (headers): dx-like outputs are overwritten, weight gradients and the
// embedding/gather scatters accumulate. Gradient accumulation over micro-batches depends on these.
TEST(BackwardContracts, LinearOverwritesDxAccumulatesDw) {
  const int64_t N = 3, IN = 4, OUT = 2;
  HostTensor x = randn({N, IN}, 29, 1), w = randn({OUT, IN}, 29, 2), dy = randn({N, OUT}, 29, 3);
  HostTensor dx0({N, IN}), dw0({OUT, IN}), dx1({N, IN}, 123.0), dw1({OUT, IN}, 1.0);
  nw::linear_backward(dx0.t(), dw0.t(), dy.t(), x.t(), w.t());
  nw::linear_backward(dx1.t(), dw1.t(), dy.t(), x.t(), w.t());
  for (int64_t i = 0; i < N * IN; ++i) EXPECT_NEAR(dx1[i], dx0[i], 1e-14);
  for (int64_t i = 0; i < OUT * IN; ++i) EXPECT_NEAR(dw1[i], dw0[i] + 1.0, 1e-14);
  // dx may be omitted (the first layer's input needs no gradient).
  HostTensor dw2({OUT, IN});
  nw::linear_backward(nw::Tensor(), dw2.t(), dy.t(), x.t(), w.t());
  for (int64_t i = 0; i < OUT * IN; ++i) EXPECT_NEAR(dw2[i], dw0[i], 1e-14);
}

TEST(BackwardContracts, GroupedLinearOverwritesDxAccumulatesDw) {
  const int64_t R = 5, IN = 3, OUT = 2, E = 3;
  HostI32 offsets({E + 1}, {0, 0, 2, 5});
  HostTensor x = randn({R, IN}, 30, 1), w = randn({E, OUT, IN}, 30, 2), dy = randn({R, OUT}, 30, 3);
  HostTensor dx0({R, IN}), dw0({E, OUT, IN}), dx1({R, IN}, -7.0), dw1({E, OUT, IN}, 2.0);
  nw::grouped_linear_backward(dx0.t(), dw0.t(), dy.t(), x.t(), w.t(), offsets.t());
  nw::grouped_linear_backward(dx1.t(), dw1.t(), dy.t(), x.t(), w.t(), offsets.t());
  for (int64_t i = 0; i < R * IN; ++i) EXPECT_NEAR(dx1[i], dx0[i], 1e-14);
  for (int64_t i = 0; i < E * OUT * IN; ++i) EXPECT_NEAR(dw1[i], dw0[i] + 2.0, 1e-14);
}

TEST(BackwardContracts, RMSNormOverwritesDxAccumulatesDw) {
  const int64_t N = 3, C = 4;
  HostTensor x = randn({N, C}, 31, 1), w = randn({C}, 31, 2), dy = randn({N, C}, 31, 3), y({N, C}), rstd({N});
  nw::rmsnorm_forward(y.t(), rstd.t(), x.t(), w.t(), 1e-6f);
  HostTensor dx0({N, C}), dw0({C}), dx1({N, C}, 5.0), dw1({C}, -1.0);
  nw::rmsnorm_backward(dx0.t(), dw0.t(), dy.t(), x.t(), w.t(), rstd.t());
  nw::rmsnorm_backward(dx1.t(), dw1.t(), dy.t(), x.t(), w.t(), rstd.t());
  for (int64_t i = 0; i < N * C; ++i) EXPECT_NEAR(dx1[i], dx0[i], 1e-14);
  for (int64_t i = 0; i < C; ++i) EXPECT_NEAR(dw1[i], dw0[i] - 1.0, 1e-14);
}

TEST(BackwardContracts, EmbeddingAndGatherAccumulate) {
  const int64_t V = 4, C = 3, N = 3;
  HostTensor dout = randn({N, C}, 32, 1), dtable({V, C}, 0.5);
  HostI32 tokens({N}, {1, 1, 3});
  nw::embedding_backward(dtable.t(), dout.t(), tokens.t());
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_EQ(dtable[0 * C + c], 0.5);
    EXPECT_NEAR(dtable[1 * C + c], 0.5 + dout[0 * C + c] + dout[1 * C + c], 1e-15);
    EXPECT_NEAR(dtable[3 * C + c], 0.5 + dout[2 * C + c], 1e-15);
  }
  Routing r;
  HostTensor dxe = randn({Routing::N * Routing::K, C}, 32, 2), dx({Routing::N, C}, 1.0);
  nw::moe_gather_backward(dx.t(), dxe.t(), r.row_of_slot.t());
  for (int64_t n = 0; n < Routing::N; ++n)
    for (int64_t c = 0; c < C; ++c)
      EXPECT_NEAR(dx[n * C + c],
                  1.0 + dxe[r.row_of_slot[n * 2] * C + c] + dxe[r.row_of_slot[n * 2 + 1] * C + c], 1e-15);
}
