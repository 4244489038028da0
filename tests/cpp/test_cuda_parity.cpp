// CUDA parity: every CUDA op against the CPU float32 oracle (csrc/cpu/) on the same random inputs.
// Inputs are built on the host, run through the CPU op and (copied to the device) through the CUDA op,
// and the results compared: fp32 elementwise ops tightly (rel 1e-5), reductions and matmul-heavy paths
// at ~1e-4, routing decisions (top-k indices, dispatch permutations) bit for bit. Reductions that must
// be deterministic (embedding backward, rmsnorm dw, residual_rmsnorm dx, attention backward, combine
// backward, grouped dW, sum_squares) are also run twice and must give identical bits.
//
// Without a usable CUDA device every test is skipped; with NANOWHALE_REQUIRE_CUDA=1 it fails instead,
// so a GPU CI job cannot pass by skipping.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/buffer.h"
#include "core/cuda_device.h"
#include "core/rng.h"
#include "core/step_workspace.h"
#include "model/model.h"
#include "ops/accumulate_losses.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/grouped_linear.h"
#include "ops/head_loss.h"
#include "ops/linear.h"
#include "ops/moe_dispatch.h"
#include "ops/moe_router.h"
#include "ops/optimizer_ops.h"
#include "ops/residual.h"
#include "ops/residual_rmsnorm.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "train/optimizer.h"
#include "need_cuda.h"

namespace {

using Shape = std::vector<int64_t>;
using F = std::vector<float>;
using I = std::vector<int32_t>;

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

F randn(const Shape& s, uint64_t seed, double scale = 1.0) {
  F v(numel(s));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(scale * nw::rng_normal(seed, 7, i));
  return v;
}

I randint(int64_t n, int32_t lo, int32_t hi, uint64_t seed) {  // uniform in [lo, hi)
  I v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = lo + static_cast<int32_t>(nw::rng_bits(seed, 11, i) % uint64_t(hi - lo));
  return v;
}

// A CPU view of a host vector.
template <typename T>
nw::Tensor cpu(std::vector<T>& v, const Shape& s) {
  EXPECT_EQ(static_cast<int64_t>(v.size()), numel(s));
  return nw::Tensor(v.data(), nw::dtype_of<T>(), nw::Device::CPU, s);
}

// A device copy of a host vector, owning its memory.
struct Dev {
  nw::Buffer buf;
  nw::Tensor t;
};
template <typename T>
Dev dev(const std::vector<T>& v, const Shape& s) {
  EXPECT_EQ(static_cast<int64_t>(v.size()), numel(s));
  Dev d{nw::Buffer(v.size() * sizeof(T), nw::Device::CUDA), nw::Tensor()};
  d.t = nw::Tensor(d.buf.data(), nw::dtype_of<T>(), nw::Device::CUDA, s);
  nw::copy_from_host(d.t, v.data());
  return d;
}
template <typename T>
std::vector<T> host(const Dev& d) {
  std::vector<T> v(d.t.numel());
  nw::copy_to_host(v.data(), d.t);
  return v;
}

// |got - want| <= rtol * |want| + atol * max|want| for every element.
void expect_close(const F& got, const F& want, double rtol, double atol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double mx = 0;
  for (float w : want) mx = std::max(mx, std::fabs(double(w)));
  size_t bad = 0, worst = 0;
  double worst_ratio = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(double(got[i]) - double(want[i]));
    const double tol = rtol * std::fabs(double(want[i])) + atol * mx;
    if (!(err <= tol)) ++bad;  // NaN counts as bad
    const double ratio = tol > 0 ? err / tol : (err > 0 ? INFINITY : 0);
    if (!(ratio <= worst_ratio)) {
      worst_ratio = ratio;
      worst = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << want.size() << " elements differ; worst at " << worst
                     << ": cuda " << got[worst] << " vs cpu " << want[worst] << " (max |cpu| " << mx << ")";
}
constexpr double kTight = 1e-5, kTightAbs = 1e-6;  // elementwise fp32
constexpr double kMat = 1e-4, kMatAbs = 1e-5;      // reductions, matmuls

template <typename T>
void expect_bits(const std::vector<T>& a, const std::vector<T>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(T)), 0) << what << ": not bit-identical";
}

}  // namespace

TEST(CudaParity, CopyDeviceToDevice) {
  NW_NEED_CUDA();
  F a = randn({1000}, 1);
  Dev da = dev(a, {1000}), db = dev(F(1000, 0.f), {1000});
  nw::cuda::copy_device_to_device(db.t.data, da.t.data, a.size() * sizeof(float));
  expect_bits(host<float>(db), a, "copy_device_to_device");
}

TEST(CudaParity, Float32Only) {
  NW_NEED_CUDA();
  nw::Buffer x(64 * sizeof(double), nw::Device::CUDA), f(64 * sizeof(double), nw::Device::CUDA);
  nw::Tensor xt(x.data(), nw::DType::F64, nw::Device::CUDA, {64}), ft(f.data(), nw::DType::F64, nw::Device::CUDA, {64});
  EXPECT_THROW(nw::residual_add(xt, ft), nw::ValueError);
  EXPECT_THROW(nw::scale_inplace(xt, 2.f), nw::ValueError);
}

TEST(CudaParity, ResidualAndScale) {
  NW_NEED_CUDA();
  const Shape s{37, 53};
  F x = randn(s, 1), f = randn(s, 2);
  Dev dx = dev(x, s), df = dev(f, s);
  nw::residual_add(cpu(x, s), cpu(f, s));
  nw::residual_add(dx.t, df.t);
  expect_close(host<float>(dx), x, kTight, kTightAbs, "residual_add");
  nw::scale_inplace(cpu(x, s), 0.37f);
  nw::scale_inplace(dx.t, 0.37f);
  expect_close(host<float>(dx), x, kTight, kTightAbs, "scale_inplace");
}

TEST(CudaParity, Activations) {
  NW_NEED_CUDA();
  const int64_t N = 33, H = 70;
  for (nw::Activation a : {nw::Activation::ReLU2, nw::Activation::SwiGLU}) {
    const std::string name = a == nw::Activation::ReLU2 ? "relu2" : "swiglu";
    const Shape ps{N, nw::activation_in_width(a, H)}, hs{N, H};
    F pre = randn(ps, 3, 2.0), dh = randn(hs, 4), h(numel(hs)), dpre(numel(ps));
    Dev dpre_d = dev(pre, ps), dh_d = dev(dh, hs), h_d = dev(h, hs), dpre_out = dev(dpre, ps);
    nw::activation_forward(a, cpu(h, hs), cpu(pre, ps));
    nw::activation_forward(a, h_d.t, dpre_d.t);
    expect_close(host<float>(h_d), h, kTight, kTightAbs, name + " forward");
    nw::activation_backward(a, cpu(dpre, ps), cpu(dh, hs), cpu(pre, ps));
    nw::activation_backward(a, dpre_out.t, dh_d.t, dpre_d.t);
    expect_close(host<float>(dpre_out), dpre, kTight, kTightAbs, name + " backward");
  }
}

TEST(CudaParity, Rope) {
  NW_NEED_CUDA();
  const int64_t B = 2, T = 37, H = 3, D = 16, Tmax = 40;
  const Shape ts{Tmax, D / 2}, xs{B, T, H, D};
  F cos_h(numel(ts)), sin_h(numel(ts));
  Dev cos_d = dev(cos_h, ts), sin_d = dev(sin_h, ts);
  nw::rope_tables(cpu(cos_h, ts), cpu(sin_h, ts), 10000.0);
  nw::rope_tables(cos_d.t, sin_d.t, 10000.0);
  expect_close(host<float>(cos_d), cos_h, 1e-6, 1e-7, "rope cos table");
  expect_close(host<float>(sin_d), sin_h, 1e-6, 1e-7, "rope sin table");
  // The rotations use the CPU tables on both sides, so only the rotation is compared.
  Dev ct = dev(cos_h, ts), st = dev(sin_h, ts);
  F x = randn(xs, 5);
  Dev x_d = dev(x, xs);
  nw::rope_forward(cpu(x, xs), cpu(cos_h, ts), cpu(sin_h, ts));
  nw::rope_forward(x_d.t, ct.t, st.t);
  expect_close(host<float>(x_d), x, kTight, kTightAbs, "rope forward");
  nw::rope_backward(cpu(x, xs), cpu(cos_h, ts), cpu(sin_h, ts));
  nw::rope_backward(x_d.t, ct.t, st.t);
  expect_close(host<float>(x_d), x, kTight, kTightAbs, "rope backward");
}

TEST(CudaParity, Embedding) {
  NW_NEED_CUDA();
  const int64_t V = 50, C = 40, N = 300;  // many repeated ids
  F table = randn({V, C}, 6), dout = randn({N, C}, 7), out(N * C), dtable = randn({V, C}, 8);
  I tok = randint(N, 0, V, 9);
  Dev table_d = dev(table, {V, C}), tok_d = dev(tok, {N}), out_d = dev(out, {N, C}), dout_d = dev(dout, {N, C});
  nw::embedding_forward(cpu(out, {N, C}), cpu(table, {V, C}), cpu(tok, {N}));
  nw::embedding_forward(out_d.t, table_d.t, tok_d.t);
  expect_bits(host<float>(out_d), out, "embedding forward");
  Dev dt1 = dev(dtable, {V, C}), dt2 = dev(dtable, {V, C});  // accumulates into a non-zero table
  nw::embedding_backward(cpu(dtable, {V, C}), cpu(dout, {N, C}), cpu(tok, {N}));
  nw::embedding_backward(dt1.t, dout_d.t, tok_d.t);
  nw::embedding_backward(dt2.t, dout_d.t, tok_d.t);
  expect_close(host<float>(dt1), dtable, kTight, kTightAbs, "embedding backward");
  expect_bits(host<float>(dt1), host<float>(dt2), "embedding backward run-to-run");
}

TEST(CudaParity, Linear) {
  NW_NEED_CUDA();
  const int64_t N = 37, IN = 48, OUT = 40;
  F x = randn({N, IN}, 10), w = randn({OUT, IN}, 11), dy = randn({N, OUT}, 12), y(N * OUT), dx(N * IN);
  F dw = randn({OUT, IN}, 13);  // dW accumulates
  Dev x_d = dev(x, {N, IN}), w_d = dev(w, {OUT, IN}), dy_d = dev(dy, {N, OUT}), y_d = dev(y, {N, OUT});
  Dev dx_d = dev(dx, {N, IN}), dw_d = dev(dw, {OUT, IN});
  nw::linear_forward(cpu(y, {N, OUT}), cpu(x, {N, IN}), cpu(w, {OUT, IN}));
  nw::linear_forward(y_d.t, x_d.t, w_d.t);
  expect_close(host<float>(y_d), y, kMat, kMatAbs, "linear y");
  nw::linear_backward(cpu(dx, {N, IN}), cpu(dw, {OUT, IN}), cpu(dy, {N, OUT}), cpu(x, {N, IN}), cpu(w, {OUT, IN}));
  nw::linear_backward(dx_d.t, dw_d.t, dy_d.t, x_d.t, w_d.t);
  expect_close(host<float>(dx_d), dx, kMat, kMatAbs, "linear dx");
  expect_close(host<float>(dw_d), dw, kMat, kMatAbs, "linear dw (accumulated)");
  // Without dx: only dW accumulates again.
  nw::linear_backward(nw::Tensor(), cpu(dw, {OUT, IN}), cpu(dy, {N, OUT}), cpu(x, {N, IN}), cpu(w, {OUT, IN}));
  nw::linear_backward(nw::Tensor(), dw_d.t, dy_d.t, x_d.t, w_d.t);
  expect_close(host<float>(dw_d), dw, kMat, kMatAbs, "linear dw without dx");
}

TEST(CudaParity, RMSNorm) {
  NW_NEED_CUDA();
  // 1000 rows span four chunks of the gain gradient's two-stage reduction; 200 columns, a partial tile.
  for (auto [N, C] : {std::pair<int64_t, int64_t>{45, 96}, {1000, 200}})
  for (bool with_w : {true, false}) {
    F x = randn({N, C}, 14, 2.0), w = randn({C}, 15, 0.3), dy = randn({N, C}, 16);
    for (float& v : w) v += 1.f;
    const std::string tag = std::string(with_w ? " (gain" : " (no gain") + ", N " + std::to_string(N) + ")";
    F y(N * C), r(N), dx(N * C), dw = randn({C}, 17);
    Dev x_d = dev(x, {N, C}), w_d = dev(w, {C}), dy_d = dev(dy, {N, C}), y_d = dev(y, {N, C}), r_d = dev(r, {N});
    Dev dx_d = dev(dx, {N, C}), dw1 = dev(dw, {C}), dw2 = dev(dw, {C});
    const nw::Tensor wc = with_w ? cpu(w, {C}) : nw::Tensor(), wg = with_w ? w_d.t : nw::Tensor();
    const nw::Tensor dwc = with_w ? cpu(dw, {C}) : nw::Tensor();
    nw::rmsnorm_forward(cpu(y, {N, C}), cpu(r, {N}), cpu(x, {N, C}), wc, 1e-6f);
    nw::rmsnorm_forward(y_d.t, r_d.t, x_d.t, wg, 1e-6f);
    expect_close(host<float>(y_d), y, kTight, kTightAbs, "rmsnorm y" + tag);
    expect_close(host<float>(r_d), r, kTight, kTightAbs, "rmsnorm rstd" + tag);
    nw::rmsnorm_backward(cpu(dx, {N, C}), dwc, cpu(dy, {N, C}), cpu(x, {N, C}), wc, cpu(r, {N}));
    nw::rmsnorm_backward(dx_d.t, with_w ? dw1.t : nw::Tensor(), dy_d.t, x_d.t, wg, r_d.t);
    expect_close(host<float>(dx_d), dx, kMat, kMatAbs, "rmsnorm dx" + tag);
    if (!with_w) continue;
    nw::rmsnorm_backward(dx_d.t, dw2.t, dy_d.t, x_d.t, wg, r_d.t);
    expect_close(host<float>(dw1), dw, kMat, kMatAbs, "rmsnorm dw (accumulated)" + tag);
    expect_bits(host<float>(dw1), host<float>(dw2), "rmsnorm dw run-to-run" + tag);
  }
}

// Zero rows (a defined, empty row slice): nothing is written and the gain gradient is unchanged, as on the
// CPU, instead of a launch with an empty grid.
TEST(CudaParity, RMSNormNoRows) {
  NW_NEED_CUDA();
  const int64_t C = 96;
  const F x = randn({4, C}, 18), w = randn({C}, 19), dw = randn({C}, 20), fill(4 * C, 7.f);
  Dev x_d = dev(x, {4, C}), w_d = dev(w, {C}), y_d = dev(fill, {4, C}), r_d = dev(F(4, 7.f), {4});
  Dev dx_d = dev(fill, {4, C}), dw_d = dev(dw, {C});
  const nw::Tensor x0 = x_d.t.slice_rows(0, 0), r0 = r_d.t.slice_rows(0, 0);
  nw::rmsnorm_forward(y_d.t.slice_rows(0, 0), r0, x0, w_d.t, 1e-6f);
  nw::rmsnorm_backward(dx_d.t.slice_rows(0, 0), dw_d.t, x0, x0, w_d.t, r0);
  nw::rmsnorm_backward(dx_d.t.slice_rows(0, 0), nw::Tensor(), x0, x0, nw::Tensor(), r0);
  expect_bits(host<float>(y_d), fill, "rmsnorm y untouched");
  expect_bits(host<float>(r_d), F(4, 7.f), "rmsnorm rstd untouched");
  expect_bits(host<float>(dx_d), fill, "rmsnorm dx untouched");
  expect_bits(host<float>(dw_d), dw, "rmsnorm dw unchanged");
}

TEST(CudaParity, ResidualRMSNorm) {
  NW_NEED_CUDA();
  // C of 96, 200 and 1100 use the three row-block sizes; 600 rows span three chunks of the gain gradient.
  for (auto [N, C] : {std::pair<int64_t, int64_t>{45, 96}, {600, 200}, {7, 1100}})
  for (bool with_w : {true, false}) {
    F x = randn({N, C}, 51, 2.0), f = randn({N, C}, 52), w = randn({C}, 53, 0.3), dy = randn({N, C}, 54);
    for (float& v : w) v += 1.f;
    const std::string tag = std::string(with_w ? " (gain" : " (no gain") + ", N " + std::to_string(N) + ")";
    F y(N * C), r(N), d = randn({N, C}, 55), dw = randn({C}, 56);
    Dev x_d = dev(x, {N, C}), f_d = dev(f, {N, C}), w_d = dev(w, {C}), dy_d = dev(dy, {N, C}), y_d = dev(y, {N, C});
    Dev r_d = dev(r, {N}), d1 = dev(d, {N, C}), d2 = dev(d, {N, C}), dw1 = dev(dw, {C}), dw2 = dev(dw, {C});
    const nw::Tensor wc = with_w ? cpu(w, {C}) : nw::Tensor(), wg = with_w ? w_d.t : nw::Tensor();
    nw::residual_rmsnorm_forward(cpu(y, {N, C}), cpu(r, {N}), cpu(x, {N, C}), cpu(f, {N, C}), wc, 1e-6f);
    nw::residual_rmsnorm_forward(y_d.t, r_d.t, x_d.t, f_d.t, wg, 1e-6f);
    expect_close(host<float>(x_d), x, kTight, kTightAbs, "residual_rmsnorm stream" + tag);
    expect_close(host<float>(y_d), y, kMat, kMatAbs, "residual_rmsnorm y" + tag);
    expect_close(host<float>(r_d), r, kMat, kMatAbs, "residual_rmsnorm rstd" + tag);
    // Backward from the CPU's stream and statistics on both sides; d accumulates.
    Dev xs_d = dev(x, {N, C}), rs_d = dev(r, {N});
    nw::residual_rmsnorm_backward(cpu(d, {N, C}), with_w ? cpu(dw, {C}) : nw::Tensor(), cpu(dy, {N, C}),
                                  cpu(x, {N, C}), wc, cpu(r, {N}));
    nw::residual_rmsnorm_backward(d1.t, with_w ? dw1.t : nw::Tensor(), dy_d.t, xs_d.t, wg, rs_d.t);
    nw::residual_rmsnorm_backward(d2.t, with_w ? dw2.t : nw::Tensor(), dy_d.t, xs_d.t, wg, rs_d.t);
    expect_close(host<float>(d1), d, kMat, kMatAbs, "residual_rmsnorm dx (accumulated)" + tag);
    expect_bits(host<float>(d1), host<float>(d2), "residual_rmsnorm dx run-to-run" + tag);
    if (!with_w) continue;
    expect_close(host<float>(dw1), dw, kMat, kMatAbs, "residual_rmsnorm dw (accumulated)" + tag);
    expect_bits(host<float>(dw1), host<float>(dw2), "residual_rmsnorm dw run-to-run" + tag);
  }
}

// Float64 sums of 3001 float32 losses (more than the block's threads: strided) in another order than the
// CPU's token order: they agree to ~N double roundings (1e-12 of the sum is that with a wide margin, while
// a lost or doubled element is off by ~1e-4 of it), and repeat bit for bit.
TEST(CudaParity, AccumulateLosses) {
  NW_NEED_CUDA();
  const int64_t N = 3001;
  F losses = randn({N}, 30, 2.0), weights = randn({N}, 31);
  for (float& l : losses) l = std::fabs(l);
  struct Case {
    bool weighted, with_balance;
    double divisor;
  };
  for (const Case& k : {Case{false, true, 2900}, Case{true, false, 1}, Case{false, true, 0}}) {
    const std::string tag = std::string(k.weighted ? " weighted" : " mean") + ", divisor " + std::to_string(k.divisor);
    std::vector<double> acc{0.5, 0.25}, divisor{k.divisor}, balance{0.125};
    Dev l_d = dev(losses, {N}), w_d = dev(weights, {N}), div_d = dev(divisor, {1}), b_d = dev(balance, {1});
    Dev acc1 = dev(acc, {2}), acc2 = dev(acc, {2});
    nw::accumulate_losses(cpu(acc, {2}), cpu(losses, {N}), k.weighted ? cpu(weights, {N}) : nw::Tensor(),
                          cpu(divisor, {1}), k.with_balance ? cpu(balance, {1}) : nw::Tensor());
    for (Dev* a : {&acc1, &acc2})
      nw::accumulate_losses(a->t, l_d.t, k.weighted ? w_d.t : nw::Tensor(), div_d.t,
                            k.with_balance ? b_d.t : nw::Tensor());
    const std::vector<double> got = host<double>(acc1);
    EXPECT_NEAR(got[0], acc[0], 1e-12 * std::fabs(acc[0])) << "loss sum" << tag;
    EXPECT_EQ(got[1], acc[1]) << "balance sum" << tag;
    if (k.divisor == 0) EXPECT_EQ(got[0], 0.5) << "divisor 0 adds nothing" << tag;
    expect_bits(got, host<double>(acc2), "accumulate_losses run-to-run" + tag);
  }
}

TEST(CudaParity, SoftcapCrossEntropy) {
  NW_NEED_CUDA();
  const int64_t N = 24, V = 300;  // V > the block size: strided rows
  F logits = randn({N, V}, 18, 8.0);
  I tgt = randint(N, 0, int32_t(V), 19);
  tgt[3] = -1;
  tgt[10] = -1;
  for (float cap : {15.f, 0.f}) {
    const std::string tag = cap > 0 ? " (cap 15)" : " (no cap)";
    F g{1.f / N}, loss(N), dl(N * V);  // g: grad_per_token
    Dev z_d = dev(logits, {N, V}), t_d = dev(tgt, {N}), loss_d = dev(loss, {N}), dl_d = dev(dl, {N, V});
    Dev g_d = dev(g, {1});
    F z = logits;
    nw::softcap_cross_entropy(cpu(loss, {N}), cpu(dl, {N, V}), cpu(z, {N, V}), cpu(tgt, {N}), nw::Tensor(), cap,
                              cpu(g, {1}));
    nw::softcap_cross_entropy(loss_d.t, dl_d.t, z_d.t, t_d.t, nw::Tensor(), cap, g_d.t);
    expect_close(host<float>(loss_d), loss, kMat, kMatAbs, "ce losses" + tag);
    expect_close(host<float>(dl_d), dl, kMat, kMatAbs, "ce dlogits" + tag);
    // dlogits aliasing logits, and losses only.
    Dev alias = dev(logits, {N, V}), loss2 = dev(F(N, -1.f), {N});
    nw::softcap_cross_entropy(loss2.t, alias.t, alias.t, t_d.t, nw::Tensor(), cap, g_d.t);
    expect_close(host<float>(alias), dl, kMat, kMatAbs, "ce dlogits aliasing logits" + tag);
    expect_close(host<float>(loss2), loss, kMat, kMatAbs, "ce losses (aliased call)" + tag);
    Dev loss3 = dev(F(N, -1.f), {N});
    nw::softcap_cross_entropy(loss3.t, nw::Tensor(), z_d.t, t_d.t, nw::Tensor(), cap, nw::Tensor());
    expect_close(host<float>(loss3), loss, kMat, kMatAbs, "ce losses without dlogits" + tag);
    // Per-token weights of both signs.
    F w = randn({N}, 21, 1.0), dlw(N * V), zw = logits;
    Dev w_d = dev(w, {N}), dlw_d = dev(dlw, {N, V});
    nw::softcap_cross_entropy(cpu(loss, {N}), cpu(dlw, {N, V}), cpu(zw, {N, V}), cpu(tgt, {N}), cpu(w, {N}), cap,
                              cpu(g, {1}));
    nw::softcap_cross_entropy(loss_d.t, dlw_d.t, z_d.t, t_d.t, w_d.t, cap, g_d.t);
    expect_close(host<float>(dlw_d), dlw, kMat, kMatAbs, "ce weighted dlogits" + tag);
  }
  F z = logits;
  Dev z_d = dev(logits, {N, V});
  nw::softcap(cpu(z, {N, V}), 15.f);
  nw::softcap(z_d.t, 15.f);
  expect_close(host<float>(z_d), z, kTight, kTightAbs, "softcap");
}

namespace {
struct AttnCase {
  int64_t B, T, H, KVH, D;
  int window;
};
}  // namespace

TEST(CudaParity, AttentionForwardBackward) {
  NW_NEED_CUDA();
  // Small and odd sizes; T > 64 crosses query/key blocks; D = 40 pads to 64; windows on and off.
  for (const AttnCase& c : {AttnCase{2, 37, 4, 2, 16, 0}, AttnCase{1, 70, 2, 1, 64, 9}, AttnCase{1, 130, 3, 3, 40, 0},
                            AttnCase{2, 100, 4, 1, 32, 33}, AttnCase{1, 20, 2, 2, 128, 0}}) {
    const std::string tag = " (B" + std::to_string(c.B) + " T" + std::to_string(c.T) + " H" + std::to_string(c.H) +
                            " KVH" + std::to_string(c.KVH) + " D" + std::to_string(c.D) + " w" +
                            std::to_string(c.window) + ")";
    const Shape qs{c.B, c.T, c.H, c.D}, ks{c.B, c.T, c.KVH, c.D}, ls{c.B, c.H, c.T};
    F q = randn(qs, 20), k = randn(ks, 21), v = randn(ks, 22), dy = randn(qs, 23);
    F y(numel(qs)), lse(numel(ls)), dq(numel(qs)), dk(numel(ks)), dv(numel(ks));
    Dev q_d = dev(q, qs), k_d = dev(k, ks), v_d = dev(v, ks), dy_d = dev(dy, qs), y_d = dev(y, qs), l_d = dev(lse, ls);
    nw::attention_forward(cpu(y, qs), cpu(lse, ls), cpu(q, qs), cpu(k, ks), cpu(v, ks), c.window);
    nw::attention_forward(y_d.t, l_d.t, q_d.t, k_d.t, v_d.t, c.window);
    expect_close(host<float>(y_d), y, kMat, kMatAbs, "attention y" + tag);
    expect_close(host<float>(l_d), lse, kMat, kMatAbs, "attention lse" + tag);
    // The backward runs on the CPU forward's y and lse on both sides.
    Dev yc = dev(y, qs), lc = dev(lse, ls);
    Dev dq1 = dev(dq, qs), dk1 = dev(dk, ks), dv1 = dev(dv, ks), dq2 = dev(dq, qs), dk2 = dev(dk, ks), dv2 = dev(dv, ks);
    nw::attention_backward(cpu(dq, qs), cpu(dk, ks), cpu(dv, ks), cpu(dy, qs), cpu(q, qs), cpu(k, ks), cpu(v, ks),
                           cpu(y, qs), cpu(lse, ls), c.window);
    nw::attention_backward(dq1.t, dk1.t, dv1.t, dy_d.t, q_d.t, k_d.t, v_d.t, yc.t, lc.t, c.window);
    nw::attention_backward(dq2.t, dk2.t, dv2.t, dy_d.t, q_d.t, k_d.t, v_d.t, yc.t, lc.t, c.window);
    expect_close(host<float>(dq1), dq, kMat, kMatAbs, "attention dq" + tag);
    expect_close(host<float>(dk1), dk, kMat, kMatAbs, "attention dk" + tag);
    expect_close(host<float>(dv1), dv, kMat, kMatAbs, "attention dv" + tag);
    expect_bits(host<float>(dq1), host<float>(dq2), "attention dq run-to-run" + tag);
    expect_bits(host<float>(dk1), host<float>(dk2), "attention dk run-to-run" + tag);
    expect_bits(host<float>(dv1), host<float>(dv2), "attention dv run-to-run" + tag);
  }
}

TEST(CudaParity, AttentionKVCache) {
  NW_NEED_CUDA();
  const int64_t B = 2, Tcap = 50, H = 4, KVH = 2, D = 16;
  const Shape ks{B, Tcap, KVH, D};
  F k = randn(ks, 24), v = randn(ks, 25);
  Dev k_d = dev(k, ks), v_d = dev(v, ks);
  for (int64_t Tq : {1, 3, 45})
    for (int window : {0, 7}) {
      const int64_t kv_len = 45;
      const std::string tag = " (Tq " + std::to_string(Tq) + " window " + std::to_string(window) + ")";
      const Shape qs{B, Tq, H, D};
      F q = randn(qs, 26), y(numel(qs));
      Dev q_d = dev(q, qs), y_d = dev(y, qs);
      nw::attention_forward_kv(cpu(y, qs), cpu(q, qs), cpu(k, ks), cpu(v, ks), kv_len, window);
      nw::attention_forward_kv(y_d.t, q_d.t, k_d.t, v_d.t, kv_len, window);
      expect_close(host<float>(y_d), y, kMat, kMatAbs, "attention_forward_kv" + tag);
    }
}

TEST(CudaParity, MoeRouter) {
  NW_NEED_CUDA();
  const int batch = 3;
  const int64_t T = 20, N = batch * T, E = 8, K = 2;
  const float route_scale = 2.5f, alpha = 1e-2f, grad_scale = 0.7f;
  F logits = randn({N, E}, 27, 1.5), bias = randn({E}, 28, 0.1);
  // Exact ties: equal logits across experts (and equal bias) must pick the lowest indices.
  for (int64_t e = 0; e < E; ++e) logits[5 * E + e] = 0.25f;
  for (int64_t e : {1, 3, 6}) logits[7 * E + e] = 2.f;
  F tied_bias = bias;
  tied_bias[1] = tied_bias[3] = tied_bias[6] = 0.05f;
  for (const F& b : {bias, tied_bias, F(E, 0.f)}) {
    F bb = b, scores(N * E), gates(N * K);
    I topk(N * K, -1);
    Dev z_d = dev(logits, {N, E}), b_d = dev(bb, {E}), s_d = dev(scores, {N, E}), g_d = dev(gates, {N, K});
    Dev i_d = dev(topk, {N, K});
    const double loss = nw::moe_router_forward(cpu(scores, {N, E}), cpu(topk, {N, K}), cpu(gates, {N, K}),
                                               cpu(logits, {N, E}), cpu(bb, {E}), batch, route_scale, alpha);
    const double loss_d = nw::moe_router_forward(s_d.t, i_d.t, g_d.t, z_d.t, b_d.t, batch, route_scale, alpha);
    expect_bits(host<int32_t>(i_d), topk, "router top-k indices");
    expect_close(host<float>(s_d), scores, kTight, kTightAbs, "router scores");
    expect_close(host<float>(g_d), gates, kTight, kTightAbs, "router gates");
    EXPECT_NEAR(loss_d, loss, 1e-5 * std::fabs(loss) + 1e-12) << "router balance loss";
    // Backward from the CPU's scores and choices on both sides.
    F dgates = randn({N, K}, 29), dl(N * E);
    Dev dg_d = dev(dgates, {N, K}), sc_d = dev(scores, {N, E}), ic_d = dev(topk, {N, K}), dl_d = dev(dl, {N, E});
    F gs{grad_scale};
    Dev gs_d = dev(gs, {1});
    nw::moe_router_backward(cpu(dl, {N, E}), cpu(dgates, {N, K}), cpu(scores, {N, E}), cpu(topk, {N, K}), batch,
                            route_scale, alpha, cpu(gs, {1}));
    nw::moe_router_backward(dl_d.t, dg_d.t, sc_d.t, ic_d.t, batch, route_scale, alpha, gs_d.t);
    expect_close(host<float>(dl_d), dl, kMat, kMatAbs, "router dlogits");
  }
  // Bias update from host int64 counts (mean 4: one expert exactly at the mean keeps its bias).
  std::vector<int64_t> counts{6, 4, 0, 2, 9, 4, 3, 4};
  F bias_c = bias;
  Dev bias_d = dev(bias, {E});
  nw::moe_update_bias(cpu(bias_c, {E}), cpu(counts, {E}), 1e-3f);
  nw::moe_update_bias(bias_d.t, cpu(counts, {E}), 1e-3f);
  expect_bits(host<float>(bias_d), bias_c, "moe_update_bias");
}

TEST(CudaParity, MoeRoute) {
  NW_NEED_CUDA();
  // (batch, T, E, K): 300 tokens in three tiles of the selection kernel, the last one partial; 130 experts,
  // more than a block's threads; one sequence of a single partial tile.
  struct Case { int batch; int64_t T, E, K; };
  for (const Case c : {Case{3, 100, 8, 2}, Case{2, 70, 130, 6}, Case{1, 5, 4, 4}}) {
    const int64_t N = c.batch * c.T, E = c.E, K = c.K;
    const std::string tag = " (E " + std::to_string(E) + ", K " + std::to_string(K) + ")";
    F logits = randn({N, E}, 61, 1.5), bias = randn({E}, 62, 0.1);
    for (int64_t e = 0; e < E; ++e) logits[2 * E + e] = 0.25f;  // a token whose scores all tie
    F scores(N * E), gates(N * K);
    I topk(N * K), counts(E), offsets(E + 1), row(N * K), tok(N * K);
    std::vector<double> balance{0.125};
    nw::moe_route(cpu(scores, {N, E}), cpu(topk, {N, K}), cpu(gates, {N, K}), cpu(counts, {E}), cpu(offsets, {E + 1}),
                  cpu(row, {N * K}), cpu(tok, {N * K}), cpu(balance, {1}), cpu(logits, {N, E}), cpu(bias, {E}), c.batch,
                  2.5f, 1e-2f);
    Dev z_d = dev(logits, {N, E}), b_d = dev(bias, {E});
    std::vector<double> balance_of_run;
    for (int run = 0; run < 2; ++run) {
      Dev s_d = dev(F(N * E), {N, E}), g_d = dev(F(N * K), {N, K}), i_d = dev(I(N * K, -1), {N, K});
      Dev c_d = dev(I(E, -1), {E}), o_d = dev(I(E + 1, -1), {E + 1}), r_d = dev(I(N * K, -1), {N * K});
      Dev t_d = dev(I(N * K, -1), {N * K}), l_d = dev(std::vector<double>{0.125}, {1});
      nw::moe_route(s_d.t, i_d.t, g_d.t, c_d.t, o_d.t, r_d.t, t_d.t, l_d.t, z_d.t, b_d.t, c.batch, 2.5f, 1e-2f);
      expect_bits(host<int32_t>(i_d), topk, "route top-k" + tag);
      expect_bits(host<int32_t>(c_d), counts, "route counts" + tag);
      expect_bits(host<int32_t>(o_d), offsets, "route offsets" + tag);
      expect_bits(host<int32_t>(r_d), row, "route row_of_slot" + tag);
      expect_bits(host<int32_t>(t_d), tok, "route token_of_row" + tag);
      expect_close(host<float>(s_d), scores, kTight, kTightAbs, "route scores" + tag);
      expect_close(host<float>(g_d), gates, kTight, kTightAbs, "route gates" + tag);
      balance_of_run.push_back(host<double>(l_d)[0]);  // 0.125 + this call's loss
      EXPECT_NEAR(balance_of_run.back(), balance[0], 1e-5 * (balance[0] - 0.125) + 1e-12) << "route balance" + tag;
    }
    expect_bits(std::vector<double>{balance_of_run[0]}, std::vector<double>{balance_of_run[1]},
                "route balance run-to-run" + tag);
  }
}

// NaN router logits (a non-finite hidden state, the step the optimizer then skips): the selection picks
// what the CPU's scan picks, K distinct experts in [0, E) for every token, so the dispatch places every
// slot and the backward indexes only real experts. Tokens: all logits NaN (the first token of the batch),
// one NaN expert, the first expert NaN, and a NaN token in the second sequence.
TEST(CudaParity, MoeRouteNaNLogits) {
  NW_NEED_CUDA();
  const int batch = 2;
  const int64_t T = 40, N = batch * T, E = 8, K = 3;
  F logits = randn({N, E}, 64, 1.5), bias = randn({E}, 65, 0.1);
  for (int64_t n : {int64_t(0), int64_t(45)})
    for (int64_t e = 0; e < E; ++e) logits[n * E + e] = NAN;
  logits[4 * E + 1] = NAN;
  logits[7 * E + 0] = NAN;
  F scores(N * E), gates(N * K);
  I topk(N * K), counts(E), offsets(E + 1), row(N * K), tok(N * K);
  std::vector<double> balance{0.0};
  nw::moe_route(cpu(scores, {N, E}), cpu(topk, {N, K}), cpu(gates, {N, K}), cpu(counts, {E}), cpu(offsets, {E + 1}),
                cpu(row, {N * K}), cpu(tok, {N * K}), cpu(balance, {1}), cpu(logits, {N, E}), cpu(bias, {E}), batch,
                2.5f, 1e-2f);
  Dev z_d = dev(logits, {N, E}), b_d = dev(bias, {E}), s_d = dev(F(N * E), {N, E}), g_d = dev(F(N * K), {N, K});
  Dev i_d = dev(I(N * K, -1), {N, K}), c_d = dev(I(E, -1), {E}), o_d = dev(I(E + 1, -1), {E + 1});
  Dev r_d = dev(I(N * K, -1), {N * K}), t_d = dev(I(N * K, -1), {N * K}), l_d = dev(std::vector<double>{0.0}, {1});
  nw::moe_route(s_d.t, i_d.t, g_d.t, c_d.t, o_d.t, r_d.t, t_d.t, l_d.t, z_d.t, b_d.t, batch, 2.5f, 1e-2f);
  expect_bits(host<int32_t>(i_d), topk, "route top-k with NaN logits");
  expect_bits(host<int32_t>(c_d), counts, "route counts with NaN logits");
  expect_bits(host<int32_t>(o_d), offsets, "route offsets with NaN logits");
  expect_bits(host<int32_t>(r_d), row, "route row_of_slot with NaN logits");
  expect_bits(host<int32_t>(t_d), tok, "route token_of_row with NaN logits");
  // The backward from those choices: dlogits of the finite tokens agree, and nothing outside is written.
  F dgates = randn({N, K}, 66), dl(N * E);
  Dev dg_d = dev(dgates, {N, K}), dl_d = dev(dl, {N, E});
  F one{1.f};  // grad_scale
  Dev one_d = dev(one, {1});
  nw::moe_router_backward(cpu(dl, {N, E}), cpu(dgates, {N, K}), cpu(scores, {N, E}), cpu(topk, {N, K}), batch, 2.5f,
                          1e-2f, cpu(one, {1}));
  nw::moe_router_backward(dl_d.t, dg_d.t, s_d.t, i_d.t, batch, 2.5f, 1e-2f, one_d.t);
  const F got = host<float>(dl_d);
  F got_finite, want_finite;
  for (int64_t i = 0; i < N * E; ++i)
    if (std::isfinite(dl[i])) {
      got_finite.push_back(got[i]);
      want_finite.push_back(dl[i]);
    }
  EXPECT_FALSE(want_finite.empty());
  expect_close(got_finite, want_finite, kMat, kMatAbs, "router dlogits with NaN logits (finite entries)");
}

TEST(CudaParity, MoeDispatchGatherCombine) {
  NW_NEED_CUDA();
  const int64_t N = 50, K = 3, E = 7, C = 40, NK = N * K;
  I topk(NK);
  for (int64_t n = 0; n < N; ++n)  // a fixed pattern (slots 0 and 2 repeat an expert); expert 4 never chosen
    for (int64_t k = 0; k < K; ++k) topk[n * K + k] = int32_t((n * 2 + k * 3) % 6 + ((n * 2 + k * 3) % 6 >= 4));
  I counts(E, -1), offsets(E + 1, -1), row(NK, -1), tok(NK, -1);
  Dev topk_d = dev(topk, {N, K}), c_d = dev(counts, {E}), o_d = dev(offsets, {E + 1}), r_d = dev(row, {NK});
  Dev t_d = dev(tok, {NK});
  nw::moe_dispatch(cpu(counts, {E}), cpu(offsets, {E + 1}), cpu(row, {NK}), cpu(tok, {NK}), cpu(topk, {N, K}));
  nw::moe_dispatch(c_d.t, o_d.t, r_d.t, t_d.t, topk_d.t);
  EXPECT_EQ(counts[4], 0);
  expect_bits(host<int32_t>(c_d), counts, "dispatch counts");
  expect_bits(host<int32_t>(o_d), offsets, "dispatch offsets");
  expect_bits(host<int32_t>(r_d), row, "dispatch row_of_slot");
  expect_bits(host<int32_t>(t_d), tok, "dispatch token_of_row");
  // Random ids with repeats inside a token too (the sort must stay stable over slots).
  I rnd = randint(NK, 0, int32_t(E), 30), c2(E), o2(E + 1), r2(NK), t2(NK);
  Dev rnd_d = dev(rnd, {N, K}), c2_d = dev(c2, {E}), o2_d = dev(o2, {E + 1}), r2_d = dev(r2, {NK}), t2_d = dev(t2, {NK});
  nw::moe_dispatch(cpu(c2, {E}), cpu(o2, {E + 1}), cpu(r2, {NK}), cpu(t2, {NK}), cpu(rnd, {N, K}));
  nw::moe_dispatch(c2_d.t, o2_d.t, r2_d.t, t2_d.t, rnd_d.t);
  expect_bits(host<int32_t>(r2_d), r2, "dispatch row_of_slot (random ids)");
  expect_bits(host<int32_t>(t2_d), t2, "dispatch token_of_row (random ids)");
  expect_bits(host<int32_t>(o2_d), o2, "dispatch offsets (random ids)");

  F x = randn({N, C}, 31), xe(NK * C);
  Dev x_d = dev(x, {N, C}), xe_d = dev(xe, {NK, C});
  nw::moe_gather(cpu(xe, {NK, C}), cpu(x, {N, C}), cpu(tok, {NK}));
  nw::moe_gather(xe_d.t, x_d.t, t_d.t);
  expect_bits(host<float>(xe_d), xe, "moe_gather");
  F dxe = randn({NK, C}, 32), dx = randn({N, C}, 33);  // dx accumulates
  Dev dxe_d = dev(dxe, {NK, C}), dx_d = dev(dx, {N, C});
  nw::moe_gather_backward(cpu(dx, {N, C}), cpu(dxe, {NK, C}), cpu(row, {NK}));
  nw::moe_gather_backward(dx_d.t, dxe_d.t, r_d.t);
  expect_close(host<float>(dx_d), dx, kTight, kTightAbs, "moe_gather_backward");

  F ye = randn({NK, C}, 34), gates = randn({N, K}, 35), y(N * C), dy = randn({N, C}, 36);
  Dev ye_d = dev(ye, {NK, C}), g_d = dev(gates, {N, K}), y_d = dev(y, {N, C}), dy_d = dev(dy, {N, C});
  nw::moe_combine(cpu(y, {N, C}), cpu(ye, {NK, C}), cpu(gates, {N, K}), cpu(row, {NK}));
  nw::moe_combine(y_d.t, ye_d.t, g_d.t, r_d.t);
  expect_close(host<float>(y_d), y, kTight, kTightAbs, "moe_combine");
  F dye(NK * C), dgates(N * K);
  Dev dye1 = dev(dye, {NK, C}), dg1 = dev(dgates, {N, K}), dye2 = dev(dye, {NK, C}), dg2 = dev(dgates, {N, K});
  nw::moe_combine_backward(cpu(dye, {NK, C}), cpu(dgates, {N, K}), cpu(dy, {N, C}), cpu(ye, {NK, C}),
                           cpu(gates, {N, K}), cpu(row, {NK}));
  nw::moe_combine_backward(dye1.t, dg1.t, dy_d.t, ye_d.t, g_d.t, r_d.t);
  nw::moe_combine_backward(dye2.t, dg2.t, dy_d.t, ye_d.t, g_d.t, r_d.t);
  expect_close(host<float>(dye1), dye, kTight, kTightAbs, "moe_combine_backward dye");
  expect_close(host<float>(dg1), dgates, kMat, kMatAbs, "moe_combine_backward dgates");
  expect_bits(host<float>(dg1), host<float>(dg2), "moe_combine_backward dgates run-to-run");
  expect_bits(host<float>(dye1), host<float>(dye2), "moe_combine_backward dye run-to-run");
}

TEST(CudaParity, GroupedLinear) {
  NW_NEED_CUDA();
  // Uneven experts: one empty, one spanning several 64-row tiles; sizes not multiples of the tiles.
  const I rows_per_expert{70, 0, 5, 130, 1};
  const int64_t E = 5, IN = 72, OUT = 40;
  I offsets{0};
  for (int32_t r : rows_per_expert) offsets.push_back(offsets.back() + r);
  const int64_t R = offsets.back();
  F x = randn({R, IN}, 37), w = randn({E, OUT, IN}, 38), dy = randn({R, OUT}, 39), y(R * OUT), dx(R * IN);
  F dw = randn({E, OUT, IN}, 40);  // dW accumulates
  Dev x_d = dev(x, {R, IN}), w_d = dev(w, {E, OUT, IN}), dy_d = dev(dy, {R, OUT}), y_d = dev(y, {R, OUT});
  Dev o_d = dev(offsets, {E + 1}), dx_d = dev(dx, {R, IN}), dw1 = dev(dw, {E, OUT, IN}), dw2 = dev(dw, {E, OUT, IN});
  nw::grouped_linear_forward(cpu(y, {R, OUT}), cpu(x, {R, IN}), cpu(w, {E, OUT, IN}), cpu(offsets, {E + 1}));
  nw::grouped_linear_forward(y_d.t, x_d.t, w_d.t, o_d.t);
  expect_close(host<float>(y_d), y, kMat, kMatAbs, "grouped forward");
  nw::grouped_linear_backward(cpu(dx, {R, IN}), cpu(dw, {E, OUT, IN}), cpu(dy, {R, OUT}), cpu(x, {R, IN}),
                              cpu(w, {E, OUT, IN}), cpu(offsets, {E + 1}));
  nw::grouped_linear_backward(dx_d.t, dw1.t, dy_d.t, x_d.t, w_d.t, o_d.t);
  nw::grouped_linear_backward(nw::Tensor(), dw2.t, dy_d.t, x_d.t, w_d.t, o_d.t);
  expect_close(host<float>(dx_d), dx, kMat, kMatAbs, "grouped dx");
  expect_close(host<float>(dw1), dw, kMat, kMatAbs, "grouped dw (accumulated)");
  expect_bits(host<float>(dw1), host<float>(dw2), "grouped dw run-to-run");
}

TEST(CudaParity, AdamWAndSumSquares) {
  NW_NEED_CUDA();
  const int64_t n = 1000;
  F p = randn({n}, 41), g = randn({n}, 42), m = randn({n}, 43, 0.1), v = randn({n}, 44, 0.1);
  for (float& x : v) x = x * x;
  Dev p_d = dev(p, {n}), g_d = dev(g, {n}), m_d = dev(m, {n}), v_d = dev(v, {n});
  const nw::AdamWArgs a{1e-2f, 0.8f, 0.95f, 1e-10f, 0.1f, 3};
  nw::adamw_update(cpu(p, {n}), cpu(g, {n}), cpu(m, {n}), cpu(v, {n}), a);
  nw::adamw_update(p_d.t, g_d.t, m_d.t, v_d.t, a);
  expect_close(host<float>(p_d), p, kTight, kTightAbs, "adamw param");
  expect_close(host<float>(m_d), m, kTight, kTightAbs, "adamw m");
  expect_close(host<float>(v_d), v, kTight, kTightAbs, "adamw v");

  const int64_t big = 100003;  // several 16384-element partial sums and a ragged tail
  F x = randn({big}, 45);
  Dev x_d = dev(x, {big});
  const double ref = nw::sum_squares(cpu(x, {big}));
  const double s1 = nw::sum_squares(x_d.t), s2 = nw::sum_squares(x_d.t);
  EXPECT_NEAR(s1, ref, 1e-12 * ref) << "sum_squares";
  EXPECT_EQ(std::memcmp(&s1, &s2, sizeof(double)), 0) << "sum_squares run-to-run";
}

namespace {
// A StepControl in device memory, no step applied yet and the given scalars staged, followed by the
// norm's partial sums.
struct DeviceControl {
  nw::Buffer buf;
  explicit DeviceControl(int64_t n, nw::StepScalars s = {1.f, 1.f, 0.95f, 0.f})
      : buf(sizeof(nw::StepControl) + nw::clip_partials(n) * sizeof(double), nw::Device::CUDA) {
    buf.zero();
    nw::copy_from_host(nw::Tensor(&control()->scalars, nw::DType::F32, nw::Device::CUDA, {4}), &s);
  }
  nw::StepControl* control() const { return static_cast<nw::StepControl*>(buf.data()); }
  double* partial() const { return reinterpret_cast<double*>(control() + 1); }
  nw::StepControl read() const {
    nw::StepControl c;
    nw::copy_to_host(&c, nw::Tensor(buf.data(), nw::DType::I32, nw::Device::CUDA, {int64_t(sizeof(c) / 4)}));
    return c;
  }
};
}  // namespace

// The optimizer's clipping decision on the device against the host decision Optimizer::step takes on
// the CPU: the same sum (the bits of the device sum_squares), norm, scale float(clip / norm) and clipped
// gradients; off (clip 0) and unreached limits leave the gradients' bits alone. The step counts itself.
TEST(CudaParity, ClipControlOnDevice) {
  NW_NEED_CUDA();
  const int64_t n = 100003;
  const F g = randn({n}, 50);
  for (const float clip : {0.f, 1e9f, 3.f}) {
    const std::string tag = " (clip " + std::to_string(clip) + ")";
    F want = g;
    Dev g_d = dev(g, {n});
    const double sum = nw::sum_squares(g_d.t), norm = std::sqrt(sum);
    if (clip > 0 && norm > clip) nw::scale_inplace(cpu(want, {n}), float(clip / norm));
    DeviceControl c(n);
    nw::clip_control(c.control(), c.partial(), g_d.t, clip);
    nw::scale_by_control(g_d.t, c.control());
    const nw::StepControl got = c.read();
    EXPECT_EQ(std::memcmp(&got.sum_squares, &sum, sizeof(double)), 0) << "sum of squares" << tag;
    EXPECT_EQ(got.norm, norm) << tag;
    EXPECT_EQ(got.apply, 1) << tag;
    EXPECT_EQ(got.steps, 1) << tag;
    EXPECT_EQ(got.clip_scale, clip > 0 && norm > clip ? float(clip / norm) : 1.f) << tag;
    if (clip == 3.f) EXPECT_LT(got.clip_scale, 1.f) << "the test must clip";
    expect_bits(host<float>(g_d), want, "clipped gradients" + tag);
  }
}

// A non-finite gradient norm decided on the device makes the whole update a no-op there: parameters,
// AdamW moments, Muon momentum, the balance bias and the routing counts keep their bits, the gradients
// are not scaled, the step is not counted. With apply = 1 the updates read the staged scalars.
TEST(CudaParity, NonFiniteNormSkipsTheUpdateOnDevice) {
  NW_NEED_CUDA();
  for (const float bad : {NAN, INFINITY}) {
    const Shape s{2, 16, 24};
    const int64_t n = numel(s), wn = 2 * nw::muon_workspace_numel(16, 24);  // CUDA: a slot per matrix
    F g = randn(s, 51);
    g[7] = bad;
    const F p = randn(s, 52, 0.05), m = randn(s, 53, 0.1), ws(wn);
    F v = randn(s, 54, 0.1);
    for (float& x : v) x = x * x;
    Dev g_d = dev(g, s), p_d = dev(p, s), m_d = dev(m, s), v_d = dev(v, s), ws_d = dev(ws, {wn});
    DeviceControl c(n);
    nw::clip_control(c.control(), c.partial(), g_d.t.view({n}), 1.f);
    nw::scale_by_control(g_d.t.view({n}), c.control());
    nw::AdamWArgs a{1e-2f, 0.8f, 0.95f, 1e-10f, 0.1f, 1};
    a.control = c.control();
    nw::adamw_update(p_d.t.view({n}), g_d.t.view({n}), m_d.t.view({n}), v_d.t.view({n}), a);
    const nw::StepControl got = c.read();
    EXPECT_FALSE(std::isfinite(got.norm));
    EXPECT_EQ(got.apply, 0);
    EXPECT_EQ(got.steps, 0);
    EXPECT_EQ(got.clip_scale, 1.f);
    expect_bits(host<float>(g_d), g, "gradients");
    expect_bits(host<float>(p_d), p, "adamw param");
    expect_bits(host<float>(m_d), m, "adamw m");
    expect_bits(host<float>(v_d), v, "adamw v");
    nw::MuonArgs ma{0.02f, 0.95f, 0.1f, 5, true};
    ma.control = c.control();
    nw::muon_update(p_d.t, g_d.t, m_d.t, ws_d.t, ma);
    expect_bits(host<float>(p_d), p, "muon param");
    expect_bits(host<float>(m_d), m, "muon momentum");
    const std::vector<int64_t> pending{5, 1, 0, 2}, last{1, 2, 3, 4};
    const F bias = randn({4}, 57);
    Dev bias_d = dev(bias, {4}), pending_d = dev(pending, {4}), last_d = dev(last, {4});
    nw::moe_balance_step(bias_d.t, pending_d.t, last_d.t, c.control());
    expect_bits(host<float>(bias_d), bias, "balance bias");
    EXPECT_EQ(host<int64_t>(pending_d), pending) << "pending counts";
    EXPECT_EQ(host<int64_t>(last_d), last) << "last step's counts";
  }
  // The same control with apply = 1 updates: the skip above comes from the flag, not a dead kernel.
  const int64_t n = 1000;
  F g = randn({n}, 55), p = randn({n}, 56), m(n, 0.f), v(n, 0.f);
  Dev g_d = dev(g, {n}), p_d = dev(p, {n}), m_d = dev(m, {n}), v_d = dev(v, {n});
  DeviceControl c(n, {0.5f, 2.f, 0.9f, 0.25f});
  nw::clip_control(c.control(), c.partial(), g_d.t, 0.f);
  nw::AdamWArgs a{1e-2f, 0.8f, 0.95f, 1e-10f, 0.1f, 0};  // step: the control's count, 1
  a.control = c.control();
  nw::adamw_update(p_d.t, g_d.t, m_d.t, v_d.t, a);
  nw::adamw_update(cpu(p, {n}), cpu(g, {n}), cpu(m, {n}), cpu(v, {n}),
                   nw::AdamWArgs{1e-2f * 0.5f, 0.8f, 0.95f, 1e-10f, 0.1f * 2.f, 1});
  expect_close(host<float>(p_d), p, kTight, kTightAbs, "adamw param with apply = 1");
  std::vector<int64_t> pending{5, 1, 0, 2};
  const std::vector<int64_t> want_last = pending;
  F bias = randn({4}, 57);
  Dev bias_d = dev(bias, {4}), pending_d = dev(pending, {4}), last_d = dev(std::vector<int64_t>(4, 7), {4});
  nw::moe_balance_step(bias_d.t, pending_d.t, last_d.t, c.control());
  nw::moe_update_bias(cpu(bias, {4}), cpu(pending, {4}), 0.25f);
  expect_bits(host<float>(bias_d), bias, "balance bias with apply = 1");
  EXPECT_EQ(host<int64_t>(pending_d), std::vector<int64_t>(4, 0)) << "pending counts reset";
  EXPECT_EQ(host<int64_t>(last_d), want_last) << "the step's counts kept";
}

TEST(CudaParity, NewtonSchulzAndMuon) {
  NW_NEED_CUDA();
  // The quintic iteration amplifies rounding differences in the small singular directions
  // (slope 3.4445 at 0, per step), so the comparison is normwise at 5e-4 of the largest entry.
  constexpr double kNs = 1e-3, kNsAbs = 5e-4;
  for (const Shape& s : {Shape{24, 40}, Shape{40, 24}, Shape{32, 32}}) {
    const int64_t R = s[0], C = s[1];
    const std::string tag = " (" + std::to_string(R) + "x" + std::to_string(C) + ")";
    F x = randn(s, 46), ws(nw::newton_schulz_workspace_numel(R, C));
    Dev x_d = dev(x, s), ws_d = dev(ws, {int64_t(ws.size())});
    nw::newton_schulz(cpu(x, s), cpu(ws, {int64_t(ws.size())}), 5);
    nw::newton_schulz(x_d.t, ws_d.t, 5);
    expect_close(host<float>(x_d), x, kNs, kNsAbs, "newton_schulz" + tag);
  }
  struct Case {
    int64_t M, R, C;
    bool nesterov;
  };
  for (const Case& c : {Case{1, 48, 32, true}, Case{3, 48, 32, true}, Case{2, 16, 40, false}}) {
    const std::string tag = " (M" + std::to_string(c.M) + " " + std::to_string(c.R) + "x" + std::to_string(c.C) + ")";
    const Shape s{c.M, c.R, c.C};
    const int64_t wn = nw::muon_workspace_numel(c.R, c.C);
    F p = randn(s, 47, 0.05), g = randn(s, 48), mom = randn(s, 49, 0.5), ws(wn), ws_batch(c.M * wn);
    Dev p_d = dev(p, s), g_d = dev(g, s), mom_d = dev(mom, s), ws_d = dev(ws_batch, {c.M * wn});  // M slots
    const nw::MuonArgs a{0.02f, 0.95f, 0.1f, 5, c.nesterov};
    nw::muon_update(cpu(p, s), cpu(g, s), cpu(mom, s), cpu(ws, {wn}), a);
    nw::muon_update(p_d.t, g_d.t, mom_d.t, ws_d.t, a);
    expect_close(host<float>(mom_d), mom, kTight, kTightAbs, "muon momentum" + tag);
    expect_close(host<float>(p_d), p, kNs, kNsAbs, "muon param" + tag);
  }
}

namespace {
// Two layers (one dense, one with 4 experts, top-2, one shared expert) of width 16, 12 positions.
nw::ModelConfig small_moe_config() {
  nw::ModelConfig cfg;
  cfg.vocab_size = 37;
  cfg.d_model = 16;
  cfg.n_layer = 2;
  cfg.n_head = 2;
  cfg.n_kv_head = 1;
  cfg.head_dim = 8;
  cfg.n_dense_layers = 1;
  cfg.dense_hidden = 24;
  cfg.n_experts = 4;
  cfg.top_k = 2;
  cfg.expert_hidden = 8;
  cfg.n_shared = 1;
  cfg.shared_hidden = 8;
  cfg.seq_len = 12;
  return cfg;
}
}  // namespace

// The training step takes its ops' scratch from the step workspace (core/step_workspace.h): after the
// first step at a shape sizes it, forward_backward and the optimizer step allocate nothing, in fp32 and in
// bf16 (whose operand copies are the largest scratch), with experts (sort space, router partials) and Muon
// over stacked expert matrices. The same op outside a step does allocate, so the count is live.
TEST(CudaParity, TrainingStepAllocatesNothingAfterTheFirst) {
  NW_NEED_CUDA();
  const nw::ModelConfig cfg = small_moe_config();
  const int B = 2, T = 12;
  const I tokens = randint(B * T, 0, cfg.vocab_size, 60), targets = randint(B * T, 0, cfg.vocab_size, 61);
  for (const nw::Precision p : {nw::Precision::FP32, nw::Precision::BF16}) {
    nw::Model model(cfg, 0, nw::Device::CUDA);
    model.set_precision(p);
    nw::Optimizer opt(model, nw::OptimizerConfig());
    auto step = [&] {
      model.forward_backward(tokens.data(), targets.data(), B, T);
      opt.step(nw::StepArgs());
      model.zero_grad();
    };
    step();
    const int64_t before = nw::cuda::scratch_pool_allocations();
    step();
    step();
    EXPECT_EQ(nw::cuda::scratch_pool_allocations(), before) << "pool allocations inside later steps";
    nw::sum_squares(model.grads().flat());
    EXPECT_GT(nw::cuda::scratch_pool_allocations(), before) << "an op outside a step uses the pool";
  }
}

// The optimizer step on the GPU, its scalars staged into device memory, against the CPU step over four
// steps with changing lr_mult, wd_mult, Muon momentum and balance gamma (clipping on). Both models get
// the same gradients and routing counts, written by the test, before each step. The third step's
// gradient is not finite: on the GPU it must leave parameters, states, biases, the pending counts and the
// step count as they were, and the fourth step's AdamW bias correction is that of step 3 on both sides.
TEST(CudaParity, OptimizerStepWithScalarsOnDevice) {
  NW_NEED_CUDA();
  constexpr double kNs = 1e-3, kNsAbs = 5e-4;  // Muon's parameters, as in NewtonSchulzAndMuon
  const nw::ModelConfig cfg = small_moe_config();
  nw::Model cm(cfg, 4, nw::Device::CPU), gm(cfg, 4, nw::Device::CUDA);
  const int64_t n = cm.params().flat().numel();
  const F theta = randn({n}, 98, 0.3);
  nw::copy_from_host(cm.params().flat(), theta.data());
  nw::copy_from_host(gm.params().flat(), theta.data());
  nw::OptimizerConfig oc;
  oc.scalar.weight_decay = 0.1f;
  oc.muon_weight_decay = 0.05f;
  nw::Optimizer co(cm, oc), go(gm, oc);
  const nw::Layout& layout = cm.params().layout();
  auto view = [](const nw::Tensor& t) {
    F v(t.numel());
    nw::copy_to_host(v.data(), t);
    return v;
  };
  auto counts_of = [&](const nw::Model& m) {
    std::vector<int64_t> c(m.pending_counts().numel());
    nw::copy_to_host(c.data(), m.pending_counts());
    return c;
  };
  const nw::StepArgs args[] = {
      {1.f, 1.f, 0.85f, 0.01f}, {0.5f, 2.f, 0.9f, 0.02f}, {0.7f, 1.5f, 0.92f, 0.03f}, {0.25f, 0.5f, 0.95f, 0.04f}};
  for (int k = 0; k < 4; ++k) {
    const std::string tag = " (step " + std::to_string(k + 1) + ")";
    F g = randn({n}, 200 + k);
    if (k == 2) g[5] = NAN;
    const std::vector<int64_t> counts{3 + k, 9, 1, 11 - k};  // (1 MoE layer, 4 experts)
    for (nw::Model* m : {&cm, &gm}) {
      nw::copy_from_host(m->grads().flat(), g.data());
      nw::copy_from_host(m->pending_counts(), counts.data());
    }
    const F params = view(gm.params().flat()), m1 = view(go.exp_avg().flat()), v1 = view(go.exp_avg_sq().flat()),
            biases = view(gm.buffers().flat());
    const double nc = co.step(args[k]), ng = go.step(args[k]);
    if (k == 2) {
      EXPECT_TRUE(std::isnan(nc) && std::isnan(ng)) << tag;
      EXPECT_EQ(co.steps(), 2);
      EXPECT_EQ(go.steps(), 2) << "a skipped step is not counted";
      expect_bits(view(gm.params().flat()), params, "params" + tag);
      expect_bits(view(go.exp_avg().flat()), m1, "exp_avg" + tag);
      expect_bits(view(go.exp_avg_sq().flat()), v1, "exp_avg_sq" + tag);
      expect_bits(view(gm.buffers().flat()), biases, "balance biases" + tag);
      EXPECT_EQ(counts_of(gm), counts) << "the counts stay pending" << tag;
      continue;
    }
    EXPECT_NEAR(ng, nc, 1e-12 * nc) << "gradient norm" << tag;
    EXPECT_EQ(go.steps(), co.steps()) << tag;
    EXPECT_EQ(go.steps(), k < 2 ? k + 1 : k) << tag;
    for (int i = 0; i < layout.size(); ++i) {
      const bool muon = cm.kind(i) == nw::ParamKind::Matrix;
      const std::string name = layout[i].name + tag;
      expect_close(view(gm.params().view(i)), view(cm.params().view(i)), muon ? kNs : kMat, muon ? kNsAbs : kMatAbs,
                   name);
      expect_close(view(go.exp_avg().view(i)), view(co.exp_avg().view(i)), kTight, kTightAbs, name + " exp_avg");
      expect_close(view(go.exp_avg_sq().view(i)), view(co.exp_avg_sq().view(i)), kTight, kTightAbs,
                   name + " exp_avg_sq");
    }
    expect_bits(view(gm.buffers().flat()), view(cm.buffers().flat()), "balance biases" + tag);
    EXPECT_EQ(gm.routing_stats()[0].tokens_per_expert, counts) << "the step's counts" << tag;
    EXPECT_EQ(counts_of(gm), std::vector<int64_t>(counts.size(), 0)) << "pending counts reset" << tag;
  }
}

// bf16 precision: the CUDA kernels against the CPU's bf16 emulation (core/precision.h). The matmuls
// multiply the same bf16 values and accumulate in float32 on both sides, so they agree to float32
// matmul accuracy; attention rounds its probabilities at other points than the CPU (running versus
// normalised values), so it agrees to bf16 accuracy: 2u max|v| for y (each side within u max|v| of the
// unrounded-P result) and 2u sqrt(T) of the largest gradient element for dq, dk, dv (as in
// test_op_bf16.cpp). Each also differs from fp32, so a kernel that ignored bf16 fails.
namespace {
constexpr double kBf16U = 1.0 / 256;  // bf16 unit roundoff

void expect_not_fp32(const F& bf16, const F& fp32, const std::string& what) {
  double mx = 0, diff = 0;
  for (size_t i = 0; i < fp32.size(); ++i) {
    mx = std::max(mx, std::fabs(double(fp32[i])));
    diff = std::max(diff, std::fabs(double(bf16[i]) - double(fp32[i])));
  }
  EXPECT_GT(diff, 1e-4 * mx) << what << ": the bf16 result equals fp32";
}

double max_abs(const F& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(double(x)));
  return m;
}

// A device copy of a host vector placed `offset` floats into its allocation: a view that is only as
// aligned as the offset makes it (a row slice of a larger tensor can be).
Dev dev_at(const F& v, const Shape& s, int64_t offset) {
  Dev d{nw::Buffer((v.size() + offset) * sizeof(float), nw::Device::CUDA), nw::Tensor()};
  d.t = nw::Tensor(static_cast<float*>(d.buf.data()) + offset, nw::DType::F32, nw::Device::CUDA, s);
  nw::copy_from_host(d.t, v.data());
  return d;
}

// One bf16 linear case (cuBLASLt) against the CPU emulation: y, then dx and dW accumulated into a
// non-zero gradient, then dW alone. Every GPU call runs twice on fresh outputs (the second finds its
// cached plan) and must give the same bits.
void check_linear_bf16(int64_t N, int64_t IN, int64_t OUT, int64_t offset) {
  const nw::Precision bf = nw::Precision::BF16;
  const std::string tag = " (N" + std::to_string(N) + " in" + std::to_string(IN) + " out" + std::to_string(OUT) +
                          " offset" + std::to_string(offset) + ")";
  const Shape xs{N, IN}, ws{OUT, IN}, ys{N, OUT};
  F x = randn(xs, 50), w = randn(ws, 51), dy = randn(ys, 52), y(N * OUT), yf(N * OUT), dx(N * IN);
  F dw = randn(ws, 53);
  Dev x_d = dev(x, xs), w_d = dev(w, ws), dy_d = dev(dy, ys);
  Dev y1 = dev_at(y, ys, offset), y2 = dev_at(y, ys, offset);
  Dev dx1 = dev_at(dx, xs, offset), dx2 = dev_at(dx, xs, offset), dw1 = dev_at(dw, ws, offset),
      dw2 = dev_at(dw, ws, offset);
  nw::linear_forward(cpu(y, ys), cpu(x, xs), cpu(w, ws), bf);
  nw::linear_forward(cpu(yf, ys), cpu(x, xs), cpu(w, ws));
  nw::linear_forward(y1.t, x_d.t, w_d.t, bf);
  nw::linear_forward(y2.t, x_d.t, w_d.t, bf);
  expect_close(host<float>(y1), y, kMat, kMatAbs, "linear bf16 y" + tag);
  expect_not_fp32(host<float>(y1), yf, "linear bf16 y" + tag);
  expect_bits(host<float>(y1), host<float>(y2), "linear bf16 y run-to-run" + tag);
  nw::linear_backward(cpu(dx, xs), cpu(dw, ws), cpu(dy, ys), cpu(x, xs), cpu(w, ws), bf);
  nw::linear_backward(dx1.t, dw1.t, dy_d.t, x_d.t, w_d.t, bf);
  nw::linear_backward(dx2.t, dw2.t, dy_d.t, x_d.t, w_d.t, bf);
  expect_close(host<float>(dx1), dx, kMat, kMatAbs, "linear bf16 dx" + tag);
  expect_close(host<float>(dw1), dw, kMat, kMatAbs, "linear bf16 dw (accumulated)" + tag);
  expect_bits(host<float>(dx1), host<float>(dx2), "linear bf16 dx run-to-run" + tag);
  expect_bits(host<float>(dw1), host<float>(dw2), "linear bf16 dw run-to-run" + tag);
  // Without dx: only dW accumulates again.
  nw::linear_backward(nw::Tensor(), cpu(dw, ws), cpu(dy, ys), cpu(x, xs), cpu(w, ws), bf);
  nw::linear_backward(nw::Tensor(), dw1.t, dy_d.t, x_d.t, w_d.t, bf);
  expect_close(host<float>(dw1), dw, kMat, kMatAbs, "linear bf16 dw without dx" + tag);
}
}  // namespace

// The model's dense shapes: widths that are not multiples of 16 (odd leading dimensions in bf16),
// many tokens (the dW GEMM's K, long enough for cuBLASLt to split), outputs at an unaligned offset.
TEST(CudaParity, LinearBf16) {
  NW_NEED_CUDA();
  check_linear_bf16(37, 48, 40, 0);
  check_linear_bf16(70, 70, 37, 0);
  check_linear_bf16(2048, 48, 40, 0);
  check_linear_bf16(33, 72, 70, 1);
}

TEST(CudaParity, GroupedLinearBf16) {
  NW_NEED_CUDA();
  const nw::Precision bf = nw::Precision::BF16;
  const I rows_per_expert{70, 0, 5, 130, 1};
  const int64_t E = 5, IN = 72, OUT = 40;
  I offsets{0};
  for (int32_t r : rows_per_expert) offsets.push_back(offsets.back() + r);
  const int64_t R = offsets.back();
  F x = randn({R, IN}, 54), w = randn({E, OUT, IN}, 55), dy = randn({R, OUT}, 56), y(R * OUT), dx(R * IN);
  F dw = randn({E, OUT, IN}, 57), yf(R * OUT);
  Dev x_d = dev(x, {R, IN}), w_d = dev(w, {E, OUT, IN}), dy_d = dev(dy, {R, OUT}), y_d = dev(y, {R, OUT});
  Dev o_d = dev(offsets, {E + 1}), dx_d = dev(dx, {R, IN}), dw1 = dev(dw, {E, OUT, IN}), dw2 = dev(dw, {E, OUT, IN});
  nw::grouped_linear_forward(cpu(y, {R, OUT}), cpu(x, {R, IN}), cpu(w, {E, OUT, IN}), cpu(offsets, {E + 1}), bf);
  nw::grouped_linear_forward(cpu(yf, {R, OUT}), cpu(x, {R, IN}), cpu(w, {E, OUT, IN}), cpu(offsets, {E + 1}));
  nw::grouped_linear_forward(y_d.t, x_d.t, w_d.t, o_d.t, bf);
  expect_close(host<float>(y_d), y, kMat, kMatAbs, "grouped bf16 forward");
  expect_not_fp32(host<float>(y_d), yf, "grouped bf16 forward");
  nw::grouped_linear_backward(cpu(dx, {R, IN}), cpu(dw, {E, OUT, IN}), cpu(dy, {R, OUT}), cpu(x, {R, IN}),
                              cpu(w, {E, OUT, IN}), cpu(offsets, {E + 1}), bf);
  nw::grouped_linear_backward(dx_d.t, dw1.t, dy_d.t, x_d.t, w_d.t, o_d.t, bf);
  nw::grouped_linear_backward(nw::Tensor(), dw2.t, dy_d.t, x_d.t, w_d.t, o_d.t, bf);
  expect_close(host<float>(dx_d), dx, kMat, kMatAbs, "grouped bf16 dx");
  expect_close(host<float>(dw1), dw, kMat, kMatAbs, "grouped bf16 dw (accumulated)");
  expect_bits(host<float>(dw1), host<float>(dw2), "grouped bf16 dw run-to-run");
}

namespace {
// ||a - b||_F / ||b||_F.
double relative_frobenius(const F& a, const F& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += double(b[i]) * b[i];
  }
  return std::sqrt(d / n);
}

// The CUDA bf16 result against the CPU emulation (emu) and fp32 (f32): both sides multiply the same bf16
// operands and accumulate in float32 in different orders. Where that order moves an intermediate across
// a bf16 rounding boundary the two operands differ by one bf16 ulp, which later steps carry along, so
// the sides agree to a fraction of u normwise, while bf16 itself moves the result by 4u to 9u from fp32
// (test_optimizer_math.cpp): the kernel must be within u of the emulation and twice as close to it as
// to fp32 (rounding at other points than the CPU would fail that).
void expect_ns_bf16(const F& gpu, const F& emu, const F& f32, const std::string& what) {
  const double to_emu = relative_frobenius(gpu, emu), to_f32 = relative_frobenius(gpu, f32);
  EXPECT_LE(to_emu, kBf16U) << what;
  EXPECT_LE(to_emu, 0.5 * to_f32) << what << ": no closer to the bf16 emulation than to fp32";
  expect_not_fp32(gpu, f32, what);
}
}  // namespace

// Newton–Schulz and Muon in bf16: tensor-core GEMMs batched over a parameter's matrices.
TEST(CudaParity, NewtonSchulzAndMuonBf16) {
  NW_NEED_CUDA();
  const nw::Precision bf = nw::Precision::BF16, fp = nw::Precision::FP32;
  for (const Shape& s : {Shape{24, 40}, Shape{40, 24}, Shape{64, 64}}) {
    const int64_t R = s[0], C = s[1], wn = nw::newton_schulz_workspace_numel(R, C, bf);
    const std::string tag = " (" + std::to_string(R) + "x" + std::to_string(C) + ")";
    F x = randn(s, 70), xf = x, ws(wn);
    Dev x_d = dev(x, s), ws_d = dev(ws, {wn});
    nw::newton_schulz(cpu(x, s), cpu(ws, {wn}), 5, bf);
    nw::newton_schulz(cpu(xf, s), cpu(ws, {wn}), 5, fp);
    nw::newton_schulz(x_d.t, ws_d.t, 5, bf);
    expect_ns_bf16(host<float>(x_d), x, xf, "newton_schulz bf16" + tag);
  }
  struct Case {
    int64_t M, R, C;
    bool nesterov;
  };
  // One matrix, a layer's experts (tall: transposed on the device), wide plain momentum, square.
  for (const Case& c : {Case{1, 48, 32, true}, Case{8, 48, 32, true}, Case{4, 16, 40, false}, Case{6, 64, 64, true}}) {
    const std::string tag = " (M" + std::to_string(c.M) + " " + std::to_string(c.R) + "x" + std::to_string(c.C) + ")";
    const Shape s{c.M, c.R, c.C};
    const int64_t n = numel(s), wn = nw::muon_workspace_numel(c.R, c.C, bf);
    const F p0 = randn(s, 71, 0.05), g = randn(s, 72), mom0 = randn(s, 73, 0.5);
    F p = p0, mom = mom0, pf = p0, momf = mom0, gc = g, ws(wn), ws_batch(c.M * wn);
    Dev p_d = dev(p0, s), g_d = dev(g, s), mom_d = dev(mom0, s), ws_d = dev(ws_batch, {c.M * wn});  // M slots
    Dev p2_d = dev(p0, s), mom2_d = dev(mom0, s);
    nw::MuonArgs a{0.02f, 0.95f, 0.1f, 5, c.nesterov, bf};
    nw::muon_update(cpu(p, s), cpu(gc, s), cpu(mom, s), cpu(ws, {wn}), a);
    nw::muon_update(p_d.t, g_d.t, mom_d.t, ws_d.t, a);
    nw::muon_update(p2_d.t, g_d.t, mom2_d.t, ws_d.t, a);
    a.precision = fp;
    nw::muon_update(cpu(pf, s), cpu(gc, s), cpu(momf, s), cpu(ws, {wn}), a);
    expect_close(host<float>(mom_d), mom, kTight, kTightAbs, "muon bf16 momentum (float32)" + tag);
    const F got = host<float>(p_d);
    F upd_gpu(n), upd_emu(n), upd_f32(n);  // the updates W' - W, where bf16 acts
    for (int64_t i = 0; i < n; ++i)
      upd_gpu[i] = got[i] - p0[i], upd_emu[i] = p[i] - p0[i], upd_f32[i] = pf[i] - p0[i];
    expect_ns_bf16(upd_gpu, upd_emu, upd_f32, "muon bf16 update" + tag);
    expect_bits(got, host<float>(p2_d), "muon bf16 run-to-run" + tag);
  }
}

namespace {
// One bf16 attention case: forward (y, lse) and backward (dq, dk, dv) against the CPU emulation, the
// backward twice for bit-identical results.
void check_attention_bf16(const AttnCase& c) {
  const nw::Precision bf = nw::Precision::BF16;
  const std::string tag = " (B" + std::to_string(c.B) + " T" + std::to_string(c.T) + " H" + std::to_string(c.H) +
                          " KVH" + std::to_string(c.KVH) + " D" + std::to_string(c.D) + " w" +
                          std::to_string(c.window) + ")";
  const Shape qs{c.B, c.T, c.H, c.D}, ks{c.B, c.T, c.KVH, c.D}, ls{c.B, c.H, c.T};
  F q = randn(qs, 60), k = randn(ks, 61), v = randn(ks, 62), dy = randn(qs, 63);
  F y(numel(qs)), yf(numel(qs)), lse(numel(ls)), lf(numel(ls)), dq(numel(qs)), dk(numel(ks)), dv(numel(ks));
  Dev q_d = dev(q, qs), k_d = dev(k, ks), v_d = dev(v, ks), dy_d = dev(dy, qs), y_d = dev(y, qs), l_d = dev(lse, ls);
  nw::attention_forward(cpu(y, qs), cpu(lse, ls), cpu(q, qs), cpu(k, ks), cpu(v, ks), c.window, bf);
  nw::attention_forward(cpu(yf, qs), cpu(lf, ls), cpu(q, qs), cpu(k, ks), cpu(v, ks), c.window);
  nw::attention_forward(y_d.t, l_d.t, q_d.t, k_d.t, v_d.t, c.window, bf);
  expect_close(host<float>(y_d), y, 0, 2 * kBf16U * max_abs(v) / max_abs(y) + kMatAbs, "attention bf16 y" + tag);
  expect_close(host<float>(l_d), lse, kMat, kMatAbs, "attention bf16 lse" + tag);
  expect_not_fp32(host<float>(y_d), yf, "attention bf16 y" + tag);
  Dev yc = dev(y, qs), lc = dev(lse, ls);
  Dev dq1 = dev(dq, qs), dk1 = dev(dk, ks), dv1 = dev(dv, ks), dq2 = dev(dq, qs), dk2 = dev(dk, ks), dv2 = dev(dv, ks);
  nw::attention_backward(cpu(dq, qs), cpu(dk, ks), cpu(dv, ks), cpu(dy, qs), cpu(q, qs), cpu(k, ks), cpu(v, ks),
                         cpu(y, qs), cpu(lse, ls), c.window, bf);
  nw::attention_backward(dq1.t, dk1.t, dv1.t, dy_d.t, q_d.t, k_d.t, v_d.t, yc.t, lc.t, c.window, bf);
  nw::attention_backward(dq2.t, dk2.t, dv2.t, dy_d.t, q_d.t, k_d.t, v_d.t, yc.t, lc.t, c.window, bf);
  const double gtol = 2 * kBf16U * std::sqrt(double(c.T));
  expect_close(host<float>(dq1), dq, 0, gtol, "attention bf16 dq" + tag);
  expect_close(host<float>(dk1), dk, 0, gtol, "attention bf16 dk" + tag);
  expect_close(host<float>(dv1), dv, 0, gtol, "attention bf16 dv" + tag);
  expect_bits(host<float>(dq1), host<float>(dq2), "attention bf16 dq run-to-run" + tag);
  expect_bits(host<float>(dk1), host<float>(dk2), "attention bf16 dk run-to-run" + tag);
  expect_bits(host<float>(dv1), host<float>(dv2), "attention bf16 dv run-to-run" + tag);
}
}  // namespace

// Head dims other than 64 and 128: the float32-compute kernels reading bf16-rounded operands.
TEST(CudaParity, AttentionBf16) {
  NW_NEED_CUDA();
  for (const AttnCase& c : {AttnCase{2, 37, 4, 2, 16, 0}, AttnCase{1, 130, 3, 3, 40, 0}, AttnCase{2, 100, 4, 1, 32, 33}})
    check_attention_bf16(c);
}

// Head dims 64 and 128: the tensor-core kernels (kernels/attention_flash.cu), 64-row tiles. T not a
// multiple of 64 (partial last tiles), T < 64, windows shorter and longer than a tile and of two keys,
// grouped-query heads (G = 1, 2, 4) and several sequences.
TEST(CudaParity, AttentionBf16TensorCores) {
  NW_NEED_CUDA();
  for (const AttnCase& c : {AttnCase{1, 20, 2, 2, 128, 0}, AttnCase{2, 150, 4, 2, 64, 0},
                            AttnCase{1, 200, 4, 1, 64, 70}, AttnCase{1, 65, 2, 1, 64, 2},
                            AttnCase{2, 131, 4, 2, 128, 33}, AttnCase{1, 97, 3, 3, 128, 0},
                            AttnCase{1, 256, 2, 1, 128, 100}})
    check_attention_bf16(c);
}

// The fused head loss (ops/head_loss.h) in chunks of 8 rows over 37 (the last chunk 5 rows) on the GPU
// against the CPU in the same chunks: losses, dx and the accumulated dW, with per-token weights and ignored
// targets, then the forward-only losses, then a second run for bit-identical dW. fp32 agrees at matmul
// accuracy; bf16 rounds dlogits to bf16 for the backward GEMMs, and the two sides' float32 logits differ in
// their last bits, so a dlogit can round to the neighbouring bf16 value: dx and dW agree to 2u of their
// largest element, the losses (from float32 logits of the same bf16 operands) at matmul accuracy.
TEST(CudaParity, HeadCrossEntropyChunked) {
  NW_NEED_CUDA();
  const int64_t N = 37, C = 48, V = 300, R = 8;
  F x = randn({N, C}, 90), w = randn({V, C}, 91, 0.3), wt = randn({N}, 92), dw0 = randn({V, C}, 93);
  I tgt = randint(N, 0, int32_t(V), 94);
  tgt[4] = -1;
  tgt[33] = -1;
  F g{0.1f};  // grad_per_token
  Dev x_d = dev(x, {N, C}), w_d = dev(w, {V, C}), wt_d = dev(wt, {N}), t_d = dev(tgt, {N}), g_d = dev(g, {1});
  for (nw::Precision p : {nw::Precision::FP32, nw::Precision::BF16}) {
    const bool bf = p == nw::Precision::BF16;
    const std::string tag = bf ? " (bf16)" : " (fp32)";
    const double gtol = bf ? 2 * kBf16U : kMatAbs;
    F loss(N), dx(N * C), dw = dw0, scratch(R * V);
    nw::head_cross_entropy(cpu(loss, {N}), cpu(dx, {N, C}), cpu(dw, {V, C}), cpu(scratch, {R, V}), cpu(x, {N, C}),
                           cpu(w, {V, C}), cpu(tgt, {N}), cpu(wt, {N}), 15.f, cpu(g, {1}), p);
    Dev loss_d = dev(F(N, -1.f), {N}), dx_d = dev(F(N * C, NAN), {N, C}), dw1 = dev(dw0, {V, C}),
        dw2 = dev(dw0, {V, C}), s_d = dev(F(R * V, NAN), {R, V});
    nw::head_cross_entropy(loss_d.t, dx_d.t, dw1.t, s_d.t, x_d.t, w_d.t, t_d.t, wt_d.t, 15.f, g_d.t, p);
    expect_close(host<float>(loss_d), loss, kMat, kMatAbs, "head loss losses" + tag);
    expect_close(host<float>(dx_d), dx, kMat, gtol, "head loss dx" + tag);
    expect_close(host<float>(dw1), dw, kMat, gtol, "head loss dw (accumulated)" + tag);
    Dev dx2 = dev(F(N * C, NAN), {N, C});
    nw::head_cross_entropy(loss_d.t, dx2.t, dw2.t, s_d.t, x_d.t, w_d.t, t_d.t, wt_d.t, 15.f, g_d.t, p);
    expect_bits(host<float>(dw1), host<float>(dw2), "head loss dw run-to-run" + tag);
    expect_bits(host<float>(dx_d), host<float>(dx2), "head loss dx run-to-run" + tag);
    Dev eval_d = dev(F(N, -1.f), {N});
    nw::head_cross_entropy(eval_d.t, nw::Tensor(), nw::Tensor(), s_d.t, x_d.t, w_d.t, t_d.t, nw::Tensor(), 15.f,
                           nw::Tensor(), p);
    expect_close(host<float>(eval_d), loss, kMat, kMatAbs, "head loss forward-only losses" + tag);
  }
}

// The model's training path with the head loss in chunks of 5 rows (2 x 12 tokens: chunks 5, 5, 5, 5, 4)
// on the GPU against the CPU model in one chunk, weighted and ignored targets, every gradient; tolerances
// as tests/python/test_cuda.py's model-level checks (fp32 1e-4, bf16 2^-6 of each tensor's largest
// gradient). Then the forward-only loss, and a second GPU step for the same bits.
TEST(CudaParity, ModelChunkedHeadLoss) {
  NW_NEED_CUDA();
  const nw::ModelConfig cfg = small_moe_config();
  const int B = 2, T = 12;
  const int64_t N = B * T;
  I tokens = randint(N, 0, cfg.vocab_size, 95), targets = randint(N, 0, cfg.vocab_size, 96);
  targets[3] = -1;
  targets[17] = -1;
  F weights = randn({N}, 97, 0.1);
  for (nw::Precision p : {nw::Precision::FP32, nw::Precision::BF16}) {
    const bool bf = p == nw::Precision::BF16;
    const std::string tag = bf ? " (bf16)" : " (fp32)";
    nw::Model cm(cfg, 4, nw::Device::CPU), gm(cfg, 4, nw::Device::CUDA);
    cm.set_precision(p);
    gm.set_precision(p);
    gm.set_head_chunk_rows(5);
    F theta = randn({cm.params().flat().numel()}, 98, 0.3);  // zero-initialised projections would hide terms
    nw::copy_from_host(cm.params().flat(), theta.data());
    nw::copy_from_host(gm.params().flat(), theta.data());
    const double lc = cm.forward_backward(tokens.data(), targets.data(), B, T, 1.0f, weights.data()).loss;
    const double lg = gm.forward_backward(tokens.data(), targets.data(), B, T, 1.0f, weights.data()).loss;
    EXPECT_NEAR(lg, lc, (bf ? kBf16U : 1e-5) * std::fabs(lc)) << "weighted loss" << tag;
    const nw::Layout& layout = cm.params().layout();
    std::vector<F> g_first;
    for (int i = 0; i < layout.size(); ++i) {
      F gc(cm.grads().view(i).numel()), gg(gc.size());
      nw::copy_to_host(gc.data(), cm.grads().view(i));
      nw::copy_to_host(gg.data(), gm.grads().view(i));
      expect_close(gg, gc, 0, bf ? 1.0 / 64 : 1e-4, layout[i].name + " gradient" + tag);
      g_first.push_back(gg);
    }
    const double ec = cm.forward(tokens.data(), targets.data(), B, T).loss;
    const double eg = gm.forward(tokens.data(), targets.data(), B, T).loss;
    EXPECT_NEAR(eg, ec, (bf ? kBf16U : 1e-5) * ec) << "evaluation loss" << tag;
    gm.zero_grad();
    gm.forward_backward(tokens.data(), targets.data(), B, T, 1.0f, weights.data());
    for (int i = 0; i < layout.size(); ++i) {
      F gg(g_first[i].size());
      nw::copy_to_host(gg.data(), gm.grads().view(i));
      expect_bits(gg, g_first[i], layout[i].name + " gradient run-to-run" + tag);
    }
  }
}
