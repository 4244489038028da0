// The float32 CPU paths (the ones training runs, with their own vectorised exp/tanh) against the
// float64 oracle on identical inputs: forward and backward of each op agree to float32 accuracy.
// The float64 paths themselves are checked against finite differences in test_op_gradients.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gradcheck.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/grouped_linear.h"
#include "ops/linear.h"
#include "ops/moe_router.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"

using nwtest::HostI32;
using nwtest::HostTensor;
using nwtest::randn;

namespace {
// A float32 copy of a float64 host tensor.
struct HostF32 {
  std::vector<int64_t> shape;
  std::vector<float> data;
  explicit HostF32(const HostTensor& h) : shape(h.shape), data(h.data.begin(), h.data.end()) {}
  explicit HostF32(std::vector<int64_t> s) : shape(std::move(s)), data(nwtest::product(shape), 0.0f) {}
  nw::Tensor t() { return nw::Tensor(data.data(), nw::DType::F32, nw::Device::CPU, shape); }
};

// Expects max |f32 - f64| <= rtol * max |f64| (+ a tiny absolute floor), and a non-trivial reference.
void expect_close(const HostF32& f, const HostTensor& d, double rtol, const char* what) {
  ASSERT_EQ(f.data.size(), d.data.size()) << what;
  double mx = 0, err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < d.data.size(); ++i) {
    mx = std::max(mx, std::fabs(d.data[i]));
    const double e = std::fabs(double(f.data[i]) - d.data[i]);
    if (e > err) {
      err = e;
      worst = i;
    }
  }
  EXPECT_GT(mx, 1e-6) << what << ": the reference is ~0";
  EXPECT_LE(err, rtol * mx + 1e-12) << what << ": worst at " << worst << " f32 " << f.data[worst] << " vs f64 "
                                    << d.data[worst] << " (max |ref| " << mx << ")";
}
}  // namespace

TEST(OpFloat32, LinearAndRMSNorm) {
  const int64_t N = 37, IN = 48, OUT = 40;
  HostTensor x = randn({N, IN}, 60, 1), w = randn({OUT, IN}, 60, 2), dy = randn({N, OUT}, 60, 3);
  HostTensor y({N, OUT}), dx({N, IN}), dw({OUT, IN});
  HostF32 xf(x), wf(w), dyf(dy), yf({N, OUT}), dxf({N, IN}), dwf({OUT, IN});
  nw::linear_forward(y.t(), x.t(), w.t());
  nw::linear_forward(yf.t(), xf.t(), wf.t());
  nw::linear_backward(dx.t(), dw.t(), dy.t(), x.t(), w.t());
  nw::linear_backward(dxf.t(), dwf.t(), dyf.t(), xf.t(), wf.t());
  expect_close(yf, y, 1e-5, "linear y");
  expect_close(dxf, dx, 1e-5, "linear dx");
  expect_close(dwf, dw, 1e-5, "linear dw");

  HostTensor g = randn({IN}, 60, 4, 0.3), r({N}), ny({N, IN}), ndx({N, IN}), ndg({IN});
  for (auto& v : g.data) v += 1.0;
  HostF32 gf(g), rf({N}), nyf({N, IN}), ndxf({N, IN}), ndgf({IN});
  HostTensor ndy = randn({N, IN}, 60, 5);
  HostF32 ndyf(ndy);
  nw::rmsnorm_forward(ny.t(), r.t(), x.t(), g.t(), 1e-6f);
  nw::rmsnorm_forward(nyf.t(), rf.t(), xf.t(), gf.t(), 1e-6f);
  nw::rmsnorm_backward(ndx.t(), ndg.t(), ndy.t(), x.t(), g.t(), r.t());
  nw::rmsnorm_backward(ndxf.t(), ndgf.t(), ndyf.t(), xf.t(), gf.t(), rf.t());
  expect_close(nyf, ny, 1e-5, "rmsnorm y");
  expect_close(ndxf, ndx, 1e-5, "rmsnorm dx");
  expect_close(ndgf, ndg, 1e-5, "rmsnorm dw");
}

namespace {
void attention_f32_vs_f64(int window) {
  const int64_t B = 2, T = 33, H = 4, KVH = 2, D = 16;
  HostTensor q = randn({B, T, H, D}, 61, 1, 1.5), k = randn({B, T, KVH, D}, 61, 2, 1.5);
  HostTensor v = randn({B, T, KVH, D}, 61, 3), dy = randn({B, T, H, D}, 61, 4);
  HostTensor y({B, T, H, D}), lse({B, H, T}), dq({B, T, H, D}), dk({B, T, KVH, D}), dv({B, T, KVH, D});
  HostF32 qf(q), kf(k), vf(v), dyf(dy), yf({B, T, H, D}), lsef({B, H, T});
  HostF32 dqf({B, T, H, D}), dkf({B, T, KVH, D}), dvf({B, T, KVH, D});
  nw::attention_forward(y.t(), lse.t(), q.t(), k.t(), v.t(), window);
  nw::attention_forward(yf.t(), lsef.t(), qf.t(), kf.t(), vf.t(), window);
  nw::attention_backward(dq.t(), dk.t(), dv.t(), dy.t(), q.t(), k.t(), v.t(), y.t(), lse.t(), window);
  nw::attention_backward(dqf.t(), dkf.t(), dvf.t(), dyf.t(), qf.t(), kf.t(), vf.t(), yf.t(), lsef.t(), window);
  expect_close(yf, y, 1e-5, "attention y");
  expect_close(lsef, lse, 1e-5, "attention lse");
  expect_close(dqf, dq, 2e-5, "attention dq");
  expect_close(dkf, dk, 2e-5, "attention dk");
  expect_close(dvf, dv, 2e-5, "attention dv");
}

void cross_entropy_f32_vs_f64(float cap) {
  const int64_t N = 19, V = 301;
  HostTensor z = randn({N, V}, 62, 1, 6.0), loss({N}), dz({N, V});
  HostF32 zf(z), lossf({N}), dzf({N, V});
  std::vector<int32_t> t(N);
  for (int64_t n = 0; n < N; ++n) t[n] = n % 5 == 2 ? -1 : int32_t((n * 37) % V);
  HostI32 targets({N}, t);
  HostTensor g({1}, 0.125);  // grad_per_token
  HostF32 gf(g);
  nw::softcap_cross_entropy(loss.t(), dz.t(), z.t(), targets.t(), nw::Tensor(), cap, g.t());
  nw::softcap_cross_entropy(lossf.t(), dzf.t(), zf.t(), targets.t(), nw::Tensor(), cap, gf.t());
  expect_close(lossf, loss, 1e-5, "cross-entropy losses");
  expect_close(dzf, dz, 1e-5, "cross-entropy dlogits");
  HostTensor w = randn({N}, 63, 1);  // per-token weights of both signs
  HostF32 wf(w);
  nw::softcap_cross_entropy(loss.t(), dz.t(), z.t(), targets.t(), w.t(), cap, g.t());
  nw::softcap_cross_entropy(lossf.t(), dzf.t(), zf.t(), targets.t(), wf.t(), cap, gf.t());
  expect_close(dzf, dz, 1e-5, "weighted cross-entropy dlogits");
  HostTensor capped = z;
  HostF32 cappedf(z);
  nw::softcap(capped.t(), cap);
  nw::softcap(cappedf.t(), cap);
  expect_close(cappedf, capped, 1e-6, "softcap");
}
}  // namespace

TEST(OpFloat32, AttentionFullCausal) { attention_f32_vs_f64(0); }
TEST(OpFloat32, AttentionSlidingWindow) { attention_f32_vs_f64(5); }
TEST(OpFloat32, CrossEntropyCap15) { cross_entropy_f32_vs_f64(15.0f); }
TEST(OpFloat32, CrossEntropyNoCap) { cross_entropy_f32_vs_f64(0.0f); }

TEST(OpFloat32, ActivationsAndRope) {
  const int64_t N = 29, H = 24;
  for (nw::Activation a : {nw::Activation::ReLU2, nw::Activation::SwiGLU}) {
    const int64_t W = nw::activation_in_width(a, H);
    HostTensor pre = randn({N, W}, 63, 1, 2.0), h({N, H}), dh = randn({N, H}, 63, 2), dpre({N, W});
    HostF32 pref(pre), hf({N, H}), dhf(dh), dpref({N, W});
    nw::activation_forward(a, h.t(), pre.t());
    nw::activation_forward(a, hf.t(), pref.t());
    nw::activation_backward(a, dpre.t(), dh.t(), pre.t());
    nw::activation_backward(a, dpref.t(), dhf.t(), pref.t());
    expect_close(hf, h, 1e-6, "activation h");
    expect_close(dpref, dpre, 1e-6, "activation dpre");
  }
  const int64_t B = 2, T = 11, HH = 3, D = 16;
  HostTensor cos({T, D / 2}), sin({T, D / 2});
  HostF32 cosf({T, D / 2}), sinf({T, D / 2});
  nw::rope_tables(cos.t(), sin.t(), 10000.0);
  nw::rope_tables(cosf.t(), sinf.t(), 10000.0);
  HostTensor x = randn({B, T, HH, D}, 63, 3);
  HostF32 xf(x);
  nw::rope_forward(x.t(), cos.t(), sin.t());
  nw::rope_forward(xf.t(), cosf.t(), sinf.t());
  expect_close(xf, x, 1e-6, "rope");
}

TEST(OpFloat32, RouterAndGroupedLinear) {
  const int B = 2, T = 16, E = 8, K = 2;
  const int64_t N = B * T;
  HostTensor z = randn({N, E}, 64, 1, 1.5), bias = randn({E}, 64, 2, 0.05), s({N, E}), g({N, K}), dz({N, E});
  HostTensor dg = randn({N, K}, 64, 3);
  HostF32 zf(z), biasf(bias), sf({N, E}), gf({N, K}), dzf({N, E}), dgf(dg);
  HostI32 topk({N, K}), topkf({N, K});
  const double l64 = nw::moe_router_forward(s.t(), topk.t(), g.t(), z.t(), bias.t(), B, 2.0f, 0.1f);
  const double l32 = nw::moe_router_forward(sf.t(), topkf.t(), gf.t(), zf.t(), biasf.t(), B, 2.0f, 0.1f);
  EXPECT_EQ(topkf.data, topk.data);
  EXPECT_NEAR(l32, l64, 1e-6 * l64);
  expect_close(gf, g, 1e-6, "router gates");
  HostTensor gs({1}, 1.0);  // grad_scale
  HostF32 gsf(gs);
  nw::moe_router_backward(dz.t(), dg.t(), s.t(), topk.t(), B, 2.0f, 0.1f, gs.t());
  nw::moe_router_backward(dzf.t(), dgf.t(), sf.t(), topkf.t(), B, 2.0f, 0.1f, gsf.t());
  expect_close(dzf, dz, 1e-5, "router dlogits");

  const int64_t R = 40, IN = 24, OUT = 20, NE = 4;
  HostI32 offsets({NE + 1}, {0, 17, 17, 30, 40});
  HostTensor x = randn({R, IN}, 64, 4), w = randn({NE, OUT, IN}, 64, 5), dy = randn({R, OUT}, 64, 6);
  HostTensor y({R, OUT}), dx({R, IN}), dw({NE, OUT, IN});
  HostF32 xf(x), wf(w), dyf(dy), yf({R, OUT}), dxf({R, IN}), dwf({NE, OUT, IN});
  nw::grouped_linear_forward(y.t(), x.t(), w.t(), offsets.t());
  nw::grouped_linear_forward(yf.t(), xf.t(), wf.t(), offsets.t());
  nw::grouped_linear_backward(dx.t(), dw.t(), dy.t(), x.t(), w.t(), offsets.t());
  nw::grouped_linear_backward(dxf.t(), dwf.t(), dyf.t(), xf.t(), wf.t(), offsets.t());
  expect_close(yf, y, 1e-5, "grouped y");
  expect_close(dxf, dx, 1e-5, "grouped dx");
  expect_close(dwf, dw, 1e-5, "grouped dw");
}
