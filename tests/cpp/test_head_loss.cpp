// The fused head loss (ops/head_loss.h): rows per chunk from the memory budget, float64 gradients of x and
// W against finite differences with several uneven chunks, chunked results against a single chunk in
// float32 (fp32 and bf16 operands), the forward-only path, and bad arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/rng.h"
#include "gradcheck.h"
#include "ops/head_loss.h"

namespace {
using nw::DType;
using nw::Precision;
using nwtest::HostI32;
using nwtest::HostTensor;

constexpr int64_t N = 11, C = 6, V = 13;
constexpr float kCap = 4.0f;

HostI32 targets_with_ignored() {
  HostI32 t({N});
  for (int64_t n = 0; n < N; ++n) t[n] = int32_t(nw::rng_bits(31, 1, n) % V);
  t[2] = -1;
  t[7] = -1;
  return t;
}

// A float32 copy of a host tensor, owning its storage.
struct F32 {
  std::vector<int64_t> shape;
  std::vector<float> data;
  explicit F32(const HostTensor& h) : shape(h.shape), data(h.data.begin(), h.data.end()) {}
  F32(std::vector<int64_t> s, float fill) : shape(std::move(s)), data(nwtest::product(shape), fill) {}
  nw::Tensor t() { return nw::Tensor(data.data(), DType::F32, nw::Device::CPU, shape); }
};

// |a - b| <= tol * max|b| element by element.
void expect_close(const std::vector<float>& a, const std::vector<float>& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  double mx = 0;
  for (float v : b) mx = std::max(mx, std::fabs(double(v)));
  ASSERT_GT(mx, 0) << what << " is all zero: the comparison would be vacuous";
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol * mx) << what << "[" << i << "]";
}
}  // namespace

TEST(HeadLoss, ChunkRowsFromTheMemoryBudget) {
  const int64_t mib = int64_t(1) << 20;
  EXPECT_EQ(nw::head_loss_chunk_rows(16384, 32768, DType::F32), 2048);  // 2048 * 32768 * 4 bytes = 256 MiB
  EXPECT_EQ(nw::head_loss_chunk_rows(16384, 32768, DType::F64), 1024);
  EXPECT_EQ(nw::head_loss_chunk_rows(16, 50, DType::F32), 16) << "small (N, V) logits: one chunk";
  EXPECT_EQ(nw::head_loss_chunk_rows(100, 50, DType::F32, 50 * 4 * 7 + 3), 7);
  EXPECT_EQ(nw::head_loss_chunk_rows(100, 1000000, DType::F32, mib), 1) << "at least one row";
  EXPECT_THROW(nw::head_loss_chunk_rows(10, 0, DType::F32), nw::ValueError);
  EXPECT_THROW(nw::head_loss_chunk_rows(10, 5, DType::F32, 0), nw::ValueError);
}

// L = sum_n grad_per_token * w_n * loss_n, whose gradient the training path computes; chunks of 4 rows over
// 11 (4, 4, 3), the soft-cap on and off.
TEST(HeadLoss, Float64GradientsMatchFiniteDifferences) {
  for (float cap : {kCap, 0.0f}) {
    HostTensor x = nwtest::randn({N, C}, 32, 1), w = nwtest::randn({V, C}, 32, 2, 0.7);
    HostTensor wt = nwtest::randn({N}, 32, 3), losses({N}), scratch({4, V});
    HostTensor dx({N, C}), dw({V, C});
    HostI32 t = targets_with_ignored();
    HostTensor g({1}, 0.3);  // grad_per_token
    auto forward = [&] {
      nw::head_cross_entropy(losses.t(), nw::Tensor(), nw::Tensor(), scratch.t(), x.t(), w.t(), t.t(), wt.t(), cap,
                             nw::Tensor(), Precision::FP32);
      double L = 0;
      for (int64_t n = 0; n < N; ++n) L += g[0] * wt[n] * losses[n];
      return L;
    };
    auto backward = [&] {
      nw::head_cross_entropy(losses.t(), dx.t(), dw.t(), scratch.t(), x.t(), w.t(), t.t(), wt.t(), cap, g.t(),
                             Precision::FP32);
    };
    nwtest::gradcheck({{"x", &x, &dx}, {"w", &w, &dw}}, {}, forward, backward);
    for (int64_t n : {2, 7})
      for (int64_t c = 0; c < C; ++c) EXPECT_EQ(dx[n * C + c], 0.0) << "an ignored target has no gradient";
  }
}

// Chunks change only how dW's sum over tokens is grouped (and the GEMMs' row counts), so every result
// equals the single chunk's up to float32 rounding: the values are sums of C = 6 (logits, dx) or N = 11
// (dW) products of magnitude ~1, whose rounding is ~1e-7 of the largest; 1e-6 of the largest value is
// that with margin, while a lost, doubled or misplaced chunk is off by O(1). In bf16 the products of the
// rounded operands are exact in float32 and their short sums nearly always too, so the dlogits that are
// rounded to bf16 for the backward are the same in both and the same bound holds.
TEST(HeadLoss, ChunksMatchOneChunkInFloat32) {
  for (Precision p : {Precision::FP32, Precision::BF16}) {
    const std::string tag = p == Precision::FP32 ? " (fp32)" : " (bf16)";
    F32 x(nwtest::randn({N, C}, 33, 1)), w(nwtest::randn({V, C}, 33, 2, 0.7)), wt(nwtest::randn({N}, 33, 3));
    HostI32 t = targets_with_ignored();
    const F32 dw_start(nwtest::randn({V, C}, 33, 4));  // dW accumulates onto what is there
    F32 g({1}, 0.25f);                                 // grad_per_token
    auto run = [&](int64_t rows, F32& losses, F32& dx, F32& dw) {
      F32 scratch({rows, V}, NAN);
      dw = dw_start;
      nw::head_cross_entropy(losses.t(), dx.t(), dw.t(), scratch.t(), x.t(), w.t(), t.t(), wt.t(), kCap, g.t(), p);
    };
    F32 l1({N}, 0), dx1({N, C}, NAN), dw1({V, C}, 0);
    run(N, l1, dx1, dw1);
    for (int64_t rows : {int64_t(1), int64_t(3), int64_t(5), N + 4}) {
      F32 l({N}, 0), dx({N, C}, NAN), dw({V, C}, 0);
      run(rows, l, dx, dw);
      const std::string what = tag + " with chunks of " + std::to_string(rows);
      expect_close(l.data, l1.data, 1e-6, "losses" + what);
      expect_close(dx.data, dx1.data, 1e-6, "dx" + what);
      expect_close(dw.data, dw1.data, 1e-6, "dw" + what);
      F32 l_eval({N}, -1), scratch({rows, V}, NAN);
      nw::head_cross_entropy(l_eval.t(), nw::Tensor(), nw::Tensor(), scratch.t(), x.t(), w.t(), t.t(), nw::Tensor(),
                             kCap, nw::Tensor(), p);
      EXPECT_EQ(l_eval.data, l.data) << "the forward-only losses" << what;
    }
  }
}

TEST(HeadLoss, BadArgumentsThrowValueError) {
  F32 x({N, C}, 0.1f), w({V, C}, 0.2f), losses({N}, 0), dx({N, C}, 0), dw({V, C}, 0), scratch({3, V}, 0);
  F32 narrow({3, V - 1}, 0), empty_rows({0, V}, 0);
  HostI32 t = targets_with_ignored(), short_t({N - 1});
  const Precision p = Precision::FP32;
  F32 g({1}, 1.0f), g_long({2}, 1.0f);  // grad_per_token
  EXPECT_THROW(nw::head_cross_entropy(losses.t(), dx.t(), nw::Tensor(), scratch.t(), x.t(), w.t(), t.t(),
                                      nw::Tensor(), kCap, g.t(), p), nw::ValueError) << "dx without dw";
  EXPECT_THROW(nw::head_cross_entropy(losses.t(), dx.t(), dw.t(), narrow.t(), x.t(), w.t(), t.t(), nw::Tensor(),
                                      kCap, g.t(), p), nw::ValueError) << "scratch narrower than V";
  EXPECT_THROW(nw::head_cross_entropy(losses.t(), dx.t(), dw.t(), empty_rows.t(), x.t(), w.t(), t.t(),
                                      nw::Tensor(), kCap, g.t(), p), nw::ValueError) << "scratch without rows";
  EXPECT_THROW(nw::head_cross_entropy(losses.t(), dx.t(), dw.t(), scratch.t(), x.t(), w.t(), short_t.t(),
                                      nw::Tensor(), kCap, g.t(), p), nw::ValueError) << "targets of the wrong length";
  HostI32 bad = targets_with_ignored();
  bad[4] = int32_t(V);
  EXPECT_THROW(nw::head_cross_entropy(losses.t(), dx.t(), dw.t(), scratch.t(), x.t(), w.t(), bad.t(), nw::Tensor(),
                                      kCap, g.t(), p), nw::ValueError) << "a target outside the vocabulary";
  EXPECT_THROW(nw::head_cross_entropy(losses.t(), dx.t(), dw.t(), scratch.t(), x.t(), w.t(), t.t(), nw::Tensor(),
                                      kCap, nw::Tensor(), p), nw::ValueError) << "training without grad_per_token";
  EXPECT_THROW(nw::head_cross_entropy(losses.t(), dx.t(), dw.t(), scratch.t(), x.t(), w.t(), t.t(), nw::Tensor(),
                                      kCap, g_long.t(), p), nw::ValueError) << "grad_per_token of two elements";
}
