// Optimizer math (ops/optimizer_ops.h): AdamW against hand-computed steps (bias correction, decoupled
// weight decay), the Muon momentum / Nesterov buffer and sqrt(max(1, R/C)) scale, Newton–Schulz
// orthogonalisation (singular values pulled toward 1, tall = transposed wide, one hand-checked
// iteration), Muon and Newton–Schulz in bf16 precision (near fp32, still orthogonalising, float32 state,
// same bits run to run and for 1 and 2 threads), and sum_squares (exact, and bit-identical for 1 and 2
// threads).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/threading.h"
#include "gradcheck.h"
#include "ops/optimizer_ops.h"

using nwtest::HostTensor;
using nwtest::randn;

namespace {
// float -> double, exactly as the engine widens its float arguments.
double w(float x) { return static_cast<double>(x); }

// Eigenvalues of a symmetric n x n matrix (row-major) by cyclic Jacobi rotations.
std::vector<double> sym_eigenvalues(std::vector<double> a, int n) {
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) off += a[p * n + q] * a[p * n + q];
    if (off < 1e-30) break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        if (std::fabs(a[p * n + q]) < 1e-300) continue;
        const double theta = (a[q * n + q] - a[p * n + p]) / (2 * a[p * n + q]);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // A <- A J (columns p, q)
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // A <- J^T A (rows p, q)
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
      }
  }
  std::vector<double> ev(n);
  for (int i = 0; i < n; ++i) ev[i] = a[i * n + i];
  std::sort(ev.begin(), ev.end());
  return ev;
}

// The small Gram matrix of an (R, C) matrix: X X^T if R <= C, else X^T X.
std::vector<double> gram(const HostTensor& x) {
  const int64_t R = x.shape[0], C = x.shape[1], m = std::min(R, C);
  std::vector<double> g(m * m, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) {
      double s = 0;
      if (R <= C)
        for (int64_t k = 0; k < C; ++k) s += x[i * C + k] * x[j * C + k];
      else
        for (int64_t k = 0; k < R; ++k) s += x[k * C + i] * x[k * C + j];
      g[i * m + j] = s;
    }
  return g;
}
}  // namespace

TEST(JacobiHelper, KnownEigenvalues) {
  // [[2, 1], [1, 2]] has eigenvalues 1 and 3; guards the helper the Newton–Schulz tests rely on.
  const auto ev = sym_eigenvalues({2, 1, 1, 2}, 2);
  EXPECT_NEAR(ev[0], 1.0, 1e-12);
  EXPECT_NEAR(ev[1], 3.0, 1e-12);
  const auto ev3 = sym_eigenvalues({4, 1, 0, 1, 3, 1, 0, 1, 2}, 3);  // trace 9, eigenvalues 3, 3 +- sqrt(3)
  EXPECT_NEAR(ev3[0], 3 - std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(ev3[1], 3.0, 1e-12);
  EXPECT_NEAR(ev3[2], 3 + std::sqrt(3.0), 1e-12);
}

// ---------------------------------------------------------------------------------------------
TEST(AdamW, TwoStepsHandComputed) {
  const float lr = 0.1f, b1 = 0.9f, b2 = 0.99f, eps = 1e-8f, wd = 0.1f;
  HostTensor p({3}), g({3}), m({3}), v({3});
  p.data = {1.0, -2.0, 0.5};
  g.data = {0.1, -0.3, 0.0};
  nw::adamw_update(p.t(), g.t(), m.t(), v.t(), nw::AdamWArgs{lr, b1, b2, eps, wd, 1});
  // Step 1: m = (1-b1) g, v = (1-b2) g^2; bias-corrected m_hat = g, v_hat = g^2, so the step is
  // lr * g / (|g| + eps) ~ lr * sign(g); decay multiplies by (1 - lr wd) = 0.99.
  EXPECT_NEAR(p[0], 1.0 * 0.99 - 0.1, 1e-7);
  EXPECT_NEAR(p[1], -2.0 * 0.99 + 0.1, 1e-7);
  EXPECT_NEAR(p[2], 0.5 * (1 - w(lr) * w(wd)), 1e-15) << "zero gradient: only the decoupled decay acts";
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(m[i], (1 - w(b1)) * g[i], 1e-15);
    EXPECT_NEAR(v[i], (1 - w(b2)) * g[i] * g[i], 1e-15);
  }
  // Step 2 with a new gradient, by the full formula.
  std::vector<double> p1 = p.data, m1 = m.data, v1 = v.data;
  g.data = {-0.2, -0.1, 0.4};
  nw::adamw_update(p.t(), g.t(), m.t(), v.t(), nw::AdamWArgs{lr, b1, b2, eps, wd, 2});
  const double bc1 = 1 - w(b1) * w(b1), bc2 = 1 - w(b2) * w(b2);
  for (int i = 0; i < 3; ++i) {
    const double mi = w(b1) * m1[i] + (1 - w(b1)) * g[i];
    const double vi = w(b2) * v1[i] + (1 - w(b2)) * g[i] * g[i];
    const double pi = p1[i] * (1 - w(lr) * w(wd)) - w(lr) * (mi / bc1) / (std::sqrt(vi / bc2) + w(eps));
    EXPECT_NEAR(m[i], mi, 1e-15);
    EXPECT_NEAR(v[i], vi, 1e-15);
    EXPECT_NEAR(p[i], pi, 1e-12) << "element " << i;
  }
  // Element 2 had no gradient at step 1: m_hat = (1-b1) 0.4 / (1-b1^2) = 0.4 / 1.9, a step of
  // lr * m_hat / sqrt(v_hat) with v_hat = (1-b2) 0.16 / (1-b2^2) = 0.16 / 1.99.
  const double mh = 0.4 / 1.9, vh = 0.16 / 1.99;
  EXPECT_NEAR(p[2], 0.495 * 0.99 - 0.1 * mh / std::sqrt(vh), 1e-6);
}

TEST(AdamW, Float32MatchesFloat64AndStepIsChecked) {
  const int n = 37;
  HostTensor p = randn({n}, 40, 1), g = randn({n}, 40, 2), m({n}), v({n});
  std::vector<float> pf(p.data.begin(), p.data.end()), gf(g.data.begin(), g.data.end()), mf(n), vf(n);
  const nw::AdamWArgs a{0.01f, 0.8f, 0.95f, 1e-10f, 0.01f, 1};
  nw::adamw_update(p.t(), g.t(), m.t(), v.t(), a);
  auto T = [&](std::vector<float>& x) { return nw::Tensor(x.data(), nw::DType::F32, nw::Device::CPU, {n}); };
  nw::adamw_update(T(pf), T(gf), T(mf), T(vf), a);
  for (int i = 0; i < n; ++i) EXPECT_NEAR(pf[i], p[i], 1e-6);
  nw::AdamWArgs bad = a;
  bad.step = 0;
  EXPECT_THROW(nw::adamw_update(p.t(), g.t(), m.t(), v.t(), bad), nw::ValueError);
}

// ---------------------------------------------------------------------------------------------
namespace {
// With ns_steps = 0 Newton–Schulz only normalises by the Frobenius norm, so the whole Muon update
// can be computed by hand: buf = mu buf + g; u = nesterov ? g + mu buf : buf;
// W = W (1 - lr wd) - lr sqrt(max(1, R/C)) u / ||u||_F, per matrix.
void check_muon_by_hand(int64_t M, int64_t R, int64_t C, bool nesterov) {
  const int64_t n = R * C;
  HostTensor p = randn({M, R, C}, 41, 1), g = randn({M, R, C}, 41, 2), buf = randn({M, R, C}, 41, 3, 0.5);
  for (int64_t i = 0; i < n; ++i) g[i] *= 10.0;  // matrix 0 has a much larger gradient than matrix 1
  HostTensor ws({nw::muon_workspace_numel(R, C)});
  const HostTensor p0 = p, buf0 = buf;
  const float lr = 0.05f, mu = 0.9f, wd = 0.2f;
  nw::muon_update(p.t(), g.t(), buf.t(), ws.t(), nw::MuonArgs{lr, mu, wd, 0, nesterov});
  const double scale = std::sqrt(std::max(1.0, double(R) / double(C)));
  for (int64_t mat = 0; mat < M; ++mat) {
    std::vector<double> u(n);
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = mat * n + i;
      const double b = w(mu) * buf0[k] + g[k];
      EXPECT_NEAR(buf[k], b, 1e-14) << "momentum buffer, matrix " << mat;
      u[i] = nesterov ? g[k] + w(mu) * b : b;
      ss += u[i] * u[i];
    }
    const double norm = std::sqrt(ss) + 1e-7;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = mat * n + i;
      EXPECT_NEAR(p[k], p0[k] * (1 - w(lr) * w(wd)) - w(lr) * scale * u[i] / norm, 1e-10)
          << "matrix " << mat << " element " << i;
    }
  }
}
}  // namespace

TEST(Muon, NesterovTallMatricesByHand) { check_muon_by_hand(2, 6, 3, true); }      // scale sqrt(2)
TEST(Muon, PlainMomentumWideMatricesByHand) { check_muon_by_hand(2, 3, 6, false); }  // scale 1
TEST(Muon, SquareSingleMatrixByHand) { check_muon_by_hand(1, 4, 4, true); }

TEST(Muon, UpdateIsNewtonSchulzOfNesterovMomentum) {
  const int64_t M = 3, R = 8, C = 4, n = R * C;
  HostTensor p = randn({M, R, C}, 42, 1), g = randn({M, R, C}, 42, 2), buf = randn({M, R, C}, 42, 3);
  const HostTensor p0 = p, buf0 = buf;
  HostTensor ws({nw::muon_workspace_numel(R, C)});
  const float lr = 0.02f, mu = 0.95f;
  nw::muon_update(p.t(), g.t(), buf.t(), ws.t(), nw::MuonArgs{lr, mu, 0.0f, 5, true});
  HostTensor ns_ws({nw::newton_schulz_workspace_numel(R, C)});
  for (int64_t mat = 0; mat < M; ++mat) {
    HostTensor u({R, C});
    for (int64_t i = 0; i < n; ++i) u[i] = g[mat * n + i] + w(mu) * (w(mu) * buf0[mat * n + i] + g[mat * n + i]);
    nw::newton_schulz(u.t(), ns_ws.t(), 5);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(p[mat * n + i], p0[mat * n + i] - w(lr) * std::sqrt(2.0) * u[i], 1e-12);
  }
  HostTensor small_ws({nw::muon_workspace_numel(R, C) - 1});
  EXPECT_THROW(nw::muon_update(p.t(), g.t(), buf.t(), small_ws.t(), nw::MuonArgs{lr, mu, 0.0f, 5, true}),
               nw::ValueError);
}

// ---------------------------------------------------------------------------------------------
namespace {
// The checks on Newton–Schulz's output x of the input x0 (5 steps).
void expect_orthogonalised(const HostTensor& x0, const HostTensor& x) {
  const int64_t R = x.shape[0], C = x.shape[1], m = std::min(R, C);
  const auto G = gram(x);
  const auto ev = sym_eigenvalues(G, int(m));
  // Singular values sigma = sqrt(eigenvalues) in roughly [0.6, 1.3].
  EXPECT_GT(std::sqrt(ev.front()), 0.6) << R << "x" << C;
  EXPECT_LT(std::sqrt(ev.back()), 1.3) << R << "x" << C;
  double dev = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) dev = std::max(dev, std::fabs(G[i * m + j] - (i == j ? 1.0 : 0.0)));
  // The quintic coefficients trade exactness for speed: singular values end in about [0.68, 1.13], not
  // at 1, so an eigenvalue of X X^T may sit ~0.53 below 1. 0.6 still rejects anything outside
  // sigma in [0.63, 1.26]; the input's spread (checked above) is far larger.
  EXPECT_LT(dev, 0.6) << "||X X^T - I||_max for " << R << "x" << C;
  EXPECT_LT(ev.back() / ev.front(), 4.0) << "eigenvalue spread of X X^T after 5 steps";
  // Orthogonalisation keeps the direction: <X_in, X_out> > 0, and the update is not the input rescaled.
  double dot = 0, n_in = 0;
  for (int64_t i = 0; i < R * C; ++i) {
    dot += x0[i] * x[i];
    n_in += x0[i] * x0[i];
  }
  EXPECT_GT(dot / std::sqrt(n_in), 0.5);
}

void check_orthogonalises(int64_t R, int64_t C, uint64_t seed) {
  const int64_t m = std::min(R, C);
  HostTensor x = randn({R, C}, seed, 1);
  // Make the input badly conditioned so the test cannot pass by accident: scale row 0 by 5.
  for (int64_t j = 0; j < C; ++j) x[j] *= 5.0;
  const HostTensor x0 = x;
  const auto ev_in = sym_eigenvalues(gram(x0), int(m));
  ASSERT_GT(ev_in.back() / ev_in.front(), 20.0) << "input should be far from orthogonal";
  HostTensor ws({nw::newton_schulz_workspace_numel(R, C)});
  nw::newton_schulz(x.t(), ws.t(), 5);
  expect_orthogonalised(x0, x);
}
}  // namespace

TEST(NewtonSchulz, WideMatrixSingularValuesNearOne) { check_orthogonalises(8, 16, 43); }
TEST(NewtonSchulz, TallMatrixSingularValuesNearOne) { check_orthogonalises(16, 8, 44); }

TEST(NewtonSchulz, TallIsTransposeOfWide) {
  const int64_t R = 16, C = 8;
  HostTensor tall = randn({R, C}, 45, 1), wide({C, R});
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) wide[j * R + i] = tall[i * C + j];
  HostTensor ws({nw::newton_schulz_workspace_numel(R, C)});
  nw::newton_schulz(tall.t(), ws.t(), 5);
  nw::newton_schulz(wide.t(), ws.t(), 5);
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) EXPECT_NEAR(tall[i * C + j], wide[j * R + i], 1e-12);
}

TEST(NewtonSchulz, OneIterationOn1x2ByHand) {
  // x = [3, 4]: normalised X = x / (5 + 1e-7); A = X X^T = |X|^2 = n2; one step gives
  // X' = (a + b n2 + c n2^2) X with the quintic coefficients (3.4445, -4.7750, 2.0315): ~0.701 X.
  HostTensor x({1, 2});
  x.data = {3.0, 4.0};
  HostTensor ws({nw::newton_schulz_workspace_numel(1, 2)});
  nw::newton_schulz(x.t(), ws.t(), 1);
  const double inv = 1.0 / (5.0 + 1e-7), n2 = 25.0 * inv * inv;
  const double factor = 3.4445 - 4.7750 * n2 + 2.0315 * n2 * n2;
  EXPECT_NEAR(factor, 0.701, 1e-6);
  EXPECT_NEAR(x[0], factor * 3.0 * inv, 1e-7);
  EXPECT_NEAR(x[1], factor * 4.0 * inv, 1e-7);
  EXPECT_NEAR(x[0], 0.4206, 1e-6);
  EXPECT_NEAR(x[1], 0.5608, 1e-6);
  // The same vector as a 2x1 (tall) matrix takes the transposed path to the same numbers.
  HostTensor y({2, 1});
  y.data = {3.0, 4.0};
  nw::newton_schulz(y.t(), ws.t(), 1);
  EXPECT_NEAR(y[0], x[0], 1e-15);
  EXPECT_NEAR(y[1], x[1], 1e-15);
}

TEST(NewtonSchulz, ZeroMatrixStaysZeroAndFinite) {
  HostTensor x({4, 6});
  HostTensor ws({nw::newton_schulz_workspace_numel(4, 6)});
  nw::newton_schulz(x.t(), ws.t(), 5);
  for (double v : x.data) EXPECT_EQ(v, 0.0);
}

// ---------------------------------------------------------------------------------------------
// bf16 precision (core/precision.h): the Newton–Schulz matmuls read operands rounded to bf16 and
// accumulate in float32; everything between the matmuls, the momentum and the weights stay float32.
namespace {
using Floats = std::vector<float>;

Floats floats(const HostTensor& h) { return Floats(h.data.begin(), h.data.end()); }
nw::Tensor view(Floats& v, std::vector<int64_t> shape) {
  return nw::Tensor(v.data(), nw::DType::F32, nw::Device::CPU, std::move(shape));
}
HostTensor widened(const Floats& v, std::vector<int64_t> shape) {
  HostTensor h(std::move(shape));
  std::copy(v.begin(), v.end(), h.data.begin());
  return h;
}

// ||a - b||_F / ||b||_F.
double relative_frobenius(const Floats& a, const Floats& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += double(b[i]) * b[i];
  }
  return std::sqrt(d / n);
}

// Newton–Schulz (5 steps) of the (R, C) matrix x in precision p.
Floats newton_schulz_f32(Floats x, int64_t R, int64_t C, nw::Precision p) {
  Floats ws(nw::newton_schulz_workspace_numel(R, C, p));
  nw::newton_schulz(view(x, {R, C}), view(ws, {int64_t(ws.size())}), 5, p);
  return x;
}

// bf16 unit roundoff (8 significant bits). A step computes X' = a X + B X where B X nearly cancels a X
// (a = 3.4445, singular values of X' about 0.7 to 1.1): B X is ~4x the size of X', so the bf16 rounding of
// its operands (B, and X; A inside B), u of each, reaches X' as up to ~4u. Five steps adding up with no
// damping bound the relative Frobenius change of the output by 20u = 0.078; the measured change is
// 4u to 9u (0.015 to 0.034 on 32x64 to 1024x256 Gaussian matrices: later steps damp earlier errors).
constexpr double kBf16U = 1.0 / 256;
constexpr double kNsBf16Rel = 20 * kBf16U;
}  // namespace

TEST(NewtonSchulzBf16, OrthogonalisesCloseToFp32AndRepeatsBits) {
  for (const auto& [R, C] : {std::pair<int64_t, int64_t>{32, 64}, {64, 32}, {48, 96}}) {
    HostTensor h = randn({R, C}, 47, 1);
    for (int64_t j = 0; j < C; ++j) h[j] *= 5.0;  // badly conditioned, as in check_orthogonalises
    const Floats x = floats(h);
    const Floats f = newton_schulz_f32(x, R, C, nw::Precision::FP32);
    const Floats b = newton_schulz_f32(x, R, C, nw::Precision::BF16);
    expect_orthogonalised(widened(x, {R, C}), widened(b, {R, C}));
    const double rel = relative_frobenius(b, f);
    EXPECT_LE(rel, kNsBf16Rel) << R << "x" << C;
    EXPECT_GT(rel, 1e-4) << R << "x" << C << ": bf16 equals fp32, the operands were not rounded";
    EXPECT_EQ(newton_schulz_f32(x, R, C, nw::Precision::BF16), b) << R << "x" << C << " run-to-run";
    std::printf("newton_schulz %lldx%lld: ||bf16 - fp32||_F / ||fp32||_F = %.5f\n", (long long)R, (long long)C, rel);
  }
}

TEST(MuonBf16, UpdateIsBf16NewtonSchulzOfFp32Momentum) {
  // Tall matrices (scale sqrt(R/C)) through the transposed path.
  const int64_t M = 3, R = 24, C = 16, n = R * C;
  const std::vector<int64_t> shape{M, R, C};
  const float lr = 0.02f, mu = 0.95f, wd = 0.1f;
  const Floats p0 = floats(randn(shape, 48, 1, 0.1)), g = floats(randn(shape, 48, 2));
  const Floats buf0 = floats(randn(shape, 48, 3));
  auto run = [&](nw::Precision prec, Floats& p, Floats& buf) {
    Floats gc = g, ws(nw::muon_workspace_numel(R, C, prec));
    nw::muon_update(view(p, shape), view(gc, shape), view(buf, shape), view(ws, {int64_t(ws.size())}),
                    nw::MuonArgs{lr, mu, wd, 5, false, prec});
  };
  Floats pf = p0, bf = buf0, pb = p0, bb = buf0;
  run(nw::Precision::FP32, pf, bf);
  run(nw::Precision::BF16, pb, bb);
  EXPECT_EQ(bb, bf) << "the momentum buffer is float32 in both precisions";
  const double decay = 1 - w(lr) * w(wd), step = w(lr) * std::sqrt(1.5);
  for (int64_t mat = 0; mat < M; ++mat) {
    const Floats u(bb.begin() + mat * n, bb.begin() + (mat + 1) * n);  // without Nesterov: the new buffer
    const Floats ub = newton_schulz_f32(u, R, C, nw::Precision::BF16);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(pb[mat * n + i], p0[mat * n + i] * decay - step * ub[i], 1e-6) << "matrix " << mat << ", " << i;
  }
  Floats upd_f(M * n), upd_b(M * n);
  for (int64_t i = 0; i < M * n; ++i) upd_f[i] = pf[i] - p0[i], upd_b[i] = pb[i] - p0[i];
  EXPECT_LE(relative_frobenius(upd_b, upd_f), kNsBf16Rel);
  EXPECT_GT(relative_frobenius(upd_b, upd_f), 1e-4) << "bf16 Muon equals fp32 Muon";
  // bf16 scratch is larger than fp32's: an fp32-sized workspace is refused, not overrun.
  EXPECT_LT(nw::muon_workspace_numel(R, C, nw::Precision::FP32), nw::muon_workspace_numel(R, C, nw::Precision::BF16));
  Floats gc = g, ws(nw::muon_workspace_numel(R, C, nw::Precision::FP32));
  EXPECT_THROW(nw::muon_update(view(pb, shape), view(gc, shape), view(bb, shape), view(ws, {int64_t(ws.size())}),
                               nw::MuonArgs{lr, mu, wd, 5, true, nw::Precision::BF16}),
               nw::ValueError);
}

TEST(MuonBf16, SameBitsForOneAndTwoThreads) {
  // Two scratch slots: with two threads two experts are orthogonalised at once, with one in turn.
  const int64_t M = 4, R = 16, C = 32;
  const std::vector<int64_t> shape{M, R, C};
  const Floats p0 = floats(randn(shape, 49, 1, 0.1)), g = floats(randn(shape, 49, 2));
  const Floats buf0 = floats(randn(shape, 49, 3));
  auto run = [&](int threads) {
    Floats p = p0, gc = g, buf = buf0, ws(2 * nw::muon_workspace_numel(R, C, nw::Precision::BF16));
    nw::set_num_threads(threads);
    nw::muon_update(view(p, shape), view(gc, shape), view(buf, shape), view(ws, {int64_t(ws.size())}),
                    nw::MuonArgs{0.02f, 0.95f, 0.0f, 5, true, nw::Precision::BF16});
    return p;
  };
  const int saved = nw::get_num_threads();
  const Floats one = run(1), two = run(2), again = run(2);
  nw::set_num_threads(saved);
  EXPECT_EQ(one, two);
  EXPECT_EQ(two, again);
  EXPECT_NE(one, p0);
}

// ---------------------------------------------------------------------------------------------
TEST(SumSquares, ExactOnIntegers) {
  // Squares of small integers sum exactly in float64, so any correct order gives the exact total.
  const int64_t n = 3 * (1 << 14) + 1001;
  std::vector<float> x(n);
  double exact = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = float(int(i % 13) - 6);
    exact += double(x[i]) * double(x[i]);
  }
  EXPECT_EQ(nw::sum_squares(nw::Tensor(x.data(), nw::DType::F32, nw::Device::CPU, {n})), exact);
  HostTensor d({5});
  d.data = {1.5, -2.0, 0.0, 3.0, 0.25};
  EXPECT_EQ(nw::sum_squares(d.t()), 2.25 + 4.0 + 9.0 + 0.0625);
}

TEST(SumSquares, CloseToLongDoubleReferenceAndSameBitsForOneAndTwoThreads) {
  const int64_t n = 5 * (1 << 14) + 321;  // several chunks, the last one partial
  std::vector<float> x(n);
  long double ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = float(nw::rng_normal(46, 1, i) * std::exp(3.0 * nw::rng_normal(46, 2, i)));  // wide dynamic range
    ref += static_cast<long double>(x[i]) * static_cast<long double>(x[i]);
  }
  const nw::Tensor t(x.data(), nw::DType::F32, nw::Device::CPU, {n});
  const int saved = nw::get_num_threads();
  nw::set_num_threads(1);
  const double s1 = nw::sum_squares(t);
  nw::set_num_threads(2);
  const double s2 = nw::sum_squares(t);
  nw::set_num_threads(saved);
  EXPECT_NEAR(s1, double(ref), 1e-12 * double(ref));
  EXPECT_EQ(std::memcmp(&s1, &s2, sizeof(double)), 0) << s1 << " vs " << s2;
}

TEST(ScaleInplace, ScalesEveryElement) {
  HostTensor d({4});
  d.data = {1.0, -2.0, 0.5, 8.0};
  nw::scale_inplace(d.t(), 0.25f);
  EXPECT_EQ(d.data, (std::vector<double>{0.25, -0.5, 0.125, 2.0}));
}

TEST(Threading, SetAndGetThreads) {
  const int saved = nw::get_num_threads();
  nw::set_num_threads(1);
  EXPECT_EQ(nw::get_num_threads(), 1);
  nw::set_num_threads(2);
  EXPECT_EQ(nw::get_num_threads(), 2);
  EXPECT_THROW(nw::set_num_threads(0), nw::ValueError);
  nw::set_num_threads(saved);
}
