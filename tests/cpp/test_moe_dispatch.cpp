// MoE routing semantics (DESIGN.md §3): the counting-sort dispatch (counts, exclusive-scan offsets,
// stable rows, inverse maps, empty experts, invalid ids), the router's selection and gates (ties to
// the lowest index, biased selection with unbiased renormalised gates, route_scale), the value of the
// sequence-wise balance loss, the fused router + dispatch (moe_route), and the aux-loss-free bias update.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "core/rng.h"
#include "gradcheck.h"
#include "ops/moe_dispatch.h"
#include "ops/moe_router.h"

using nwtest::HostI32;
using nwtest::HostTensor;

namespace {
struct Dispatch {
  int64_t N, K, E;
  HostI32 topk, counts, offsets, row_of_slot, token_of_row;
  Dispatch(int64_t n, int64_t k, int64_t e, std::vector<int32_t> ids)
      : N(n), K(k), E(e), topk({n, k}, std::move(ids)), counts(std::vector<int64_t>{e}, -1),
        offsets(std::vector<int64_t>{e + 1}, -1), row_of_slot(std::vector<int64_t>{n * k}, -1),
        token_of_row(std::vector<int64_t>{n * k}, -1) {}
  void run() { nw::moe_dispatch(counts.t(), offsets.t(), row_of_slot.t(), token_of_row.t(), topk.t()); }
};

// Every structural property of a dispatch result, for any input.
void check_dispatch_invariants(const Dispatch& d) {
  const int64_t NK = d.N * d.K;
  std::vector<int32_t> expect_counts(d.E, 0);
  for (int64_t p = 0; p < NK; ++p) expect_counts[d.topk[p]]++;
  ASSERT_EQ(d.offsets[0], 0);
  for (int64_t e = 0; e < d.E; ++e) {
    EXPECT_EQ(d.counts[e], expect_counts[e]) << "expert " << e;
    EXPECT_EQ(d.offsets[e + 1], d.offsets[e] + expect_counts[e]) << "exclusive scan at " << e;
  }
  EXPECT_EQ(d.offsets[d.E], NK);
  // row_of_slot is a permutation of the rows, and each slot lands in its expert's range.
  std::vector<int> seen(NK, 0);
  for (int64_t p = 0; p < NK; ++p) {
    const int32_t r = d.row_of_slot[p], e = d.topk[p];
    ASSERT_GE(r, 0);
    ASSERT_LT(r, NK);
    seen[r]++;
    EXPECT_GE(r, d.offsets[e]) << "slot " << p;
    EXPECT_LT(r, d.offsets[e + 1]) << "slot " << p;
    EXPECT_EQ(d.token_of_row[r], p / d.K) << "token_of_row must invert row_of_slot (slot " << p << ")";
  }
  for (int64_t r = 0; r < NK; ++r) EXPECT_EQ(seen[r], 1) << "row " << r;
  // Stable: within an expert, rows are in increasing token order (and slot order for equal tokens).
  for (int64_t e = 0; e < d.E; ++e)
    for (int32_t r = d.offsets[e] + 1; r < d.offsets[e + 1]; ++r)
      EXPECT_LT(d.token_of_row[r - 1], d.token_of_row[r]) << "expert " << e << " row " << r;
}
}  // namespace

TEST(MoEDispatch, HandComputedCountsOffsetsAndRows) {
  // Six tokens, two slots each, five experts; expert 2 receives nothing.
  Dispatch d(6, 2, 5, {3, 0, 0, 3, 1, 3, 3, 1, 0, 4, 4, 0});
  d.run();
  EXPECT_EQ(d.counts.data, (std::vector<int32_t>{4, 2, 0, 4, 2}));
  EXPECT_EQ(d.offsets.data, (std::vector<int32_t>{0, 4, 6, 6, 10, 12}));
  // expert 0: tokens 0,1,4,5; expert 1: 2,3; expert 3: 0,1,2,3; expert 4: 4,5.
  EXPECT_EQ(d.token_of_row.data, (std::vector<int32_t>{0, 1, 4, 5, 2, 3, 0, 1, 2, 3, 4, 5}));
  // slot (n, k) -> row: token 0 slot 0 is expert 3's first row (6), slot 1 is expert 0's first (0), ...
  EXPECT_EQ(d.row_of_slot.data, (std::vector<int32_t>{6, 0, 1, 7, 4, 8, 9, 5, 2, 10, 11, 3}));
  check_dispatch_invariants(d);
}

TEST(MoEDispatch, RandomRoutingInvariants) {
  const int64_t N = 200, K = 3, E = 8;
  std::vector<int32_t> ids;
  for (int64_t n = 0; n < N; ++n) {
    // K distinct experts per token, skewed so expert 7 is never chosen and expert 0 often.
    std::vector<int32_t> pool = {0, 0, 0, 1, 2, 3, 4, 5, 6};
    std::vector<int32_t> chosen;
    for (uint64_t i = 0; chosen.size() < size_t(K); ++i) {
      const int32_t e = pool[nw::rng_bits(5, n, i) % pool.size()];
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    ids.insert(ids.end(), chosen.begin(), chosen.end());
  }
  Dispatch d(N, K, E, ids);
  d.run();
  check_dispatch_invariants(d);
  EXPECT_EQ(d.counts[7], 0);
  EXPECT_EQ(d.offsets[7], d.offsets[8]);
  EXPECT_GT(d.counts[0], d.counts[1]);
}

TEST(MoEDispatch, AllTokensToOneExpert) {
  Dispatch d(4, 1, 3, {1, 1, 1, 1});
  d.run();
  EXPECT_EQ(d.counts.data, (std::vector<int32_t>{0, 4, 0}));
  EXPECT_EQ(d.offsets.data, (std::vector<int32_t>{0, 0, 4, 4}));
  EXPECT_EQ(d.token_of_row.data, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(d.row_of_slot.data, (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(MoEDispatch, InvalidExpertIdThrowsValueError) {
  Dispatch too_big(3, 2, 4, {0, 1, 2, 4, 3, 0});
  EXPECT_THROW(too_big.run(), nw::ValueError);
  Dispatch negative(3, 2, 4, {0, 1, -1, 3, 3, 0});
  EXPECT_THROW(negative.run(), nw::ValueError);
  Dispatch ok(3, 2, 4, {0, 1, 2, 3, 3, 0});
  EXPECT_NO_THROW(ok.run());
}

TEST(MoEDispatch, WrongShapesThrowValueError) {
  Dispatch d(3, 2, 4, {0, 1, 2, 3, 3, 0});
  HostI32 short_offsets(std::vector<int64_t>{4});  // needs E + 1
  EXPECT_THROW(nw::moe_dispatch(d.counts.t(), short_offsets.t(), d.row_of_slot.t(), d.token_of_row.t(), d.topk.t()),
               nw::ValueError);
  HostTensor f64_counts({4});
  EXPECT_THROW(nw::moe_dispatch(f64_counts.t(), d.offsets.t(), d.row_of_slot.t(), d.token_of_row.t(), d.topk.t()),
               nw::ValueError);
}

// ---------------------------------------------------------------------------------------------
namespace {
struct Router {
  int64_t N, E, K;
  HostTensor logits, bias, scores, gates;
  HostI32 topk;
  Router(int64_t n, int64_t e, int64_t k, std::vector<double> z, std::vector<double> b)
      : N(n), E(e), K(k), logits({n, e}), bias({e}), scores({n, e}), gates({n, k}), topk(std::vector<int64_t>{n, k}, -1) {
    logits.data = std::move(z);
    bias.data = std::move(b);
  }
  double run(int batch = 1, float route_scale = 1.0f, float alpha = 0.0f) {
    return nw::moe_router_forward(scores.t(), topk.t(), gates.t(), logits.t(), bias.t(), batch, route_scale, alpha);
  }
  // expert -> gate of token n (the order of the K choices is not part of the contract).
  std::map<int, double> choice(int64_t n) const {
    std::map<int, double> m;
    for (int64_t j = 0; j < K; ++j) m[topk[n * K + j]] = gates[n * K + j];
    return m;
  }
};
double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }
}  // namespace

TEST(MoERouter, ScoresAreSigmoidOfLogits) {
  Router r(2, 3, 1, {0.0, 1.0, -2.0, 3.0, -0.5, 0.25}, {0, 0, 0});
  r.run();
  for (int64_t i = 0; i < 6; ++i) EXPECT_NEAR(r.scores[i], sigmoid(r.logits[i]), 1e-15);
}

TEST(MoERouter, TiesSelectLowestIndex) {
  // All scores equal: top-2 is {0, 1}, top-1 is {0}; gates equal.
  for (int64_t K : {1, 2, 3}) {
    Router r(1, 4, K, {0.3, 0.3, 0.3, 0.3}, {0, 0, 0, 0});
    r.run(1, 1.0f);
    std::map<int, double> expect;
    for (int e = 0; e < K; ++e) expect[e] = 1.0 / K;
    auto got = r.choice(0);
    ASSERT_EQ(got.size(), size_t(K));
    for (auto [e, g] : expect) {
      ASSERT_TRUE(got.count(e)) << "K=" << K << ": expert " << e << " should be chosen";
      EXPECT_NEAR(got[e], g, 1e-15);
    }
  }
}

TEST(MoERouter, TiesInBiasedScoreSelectLowestIndex) {
  // s + b: experts 2 and 4 tie highest (s(0.3) + 0.2), then 0 (s(1)), then 1 and 3 tie (s(0.3)).
  const std::vector<double> z = {1.0, 0.3, 0.3, 0.3, 0.3}, b = {0.0, 0.0, 0.2, 0.0, 0.2};
  const std::vector<std::vector<int>> expect = {{2}, {2, 4}, {0, 2, 4}, {0, 1, 2, 4}};
  for (int64_t K = 1; K <= 4; ++K) {
    Router r(1, 5, K, z, b);
    r.run(1, 1.0f);
    auto got = r.choice(0);
    std::vector<int> chosen;
    for (auto& kv : got) chosen.push_back(kv.first);
    EXPECT_EQ(chosen, expect[K - 1]) << "K=" << K;
    // Gates renormalise the *unbiased* scores of the chosen experts.
    double sum = 0;
    for (int e : chosen) sum += sigmoid(z[e]);
    for (int e : chosen) EXPECT_NEAR(got[e], sigmoid(z[e]) / sum, 1e-14) << "K=" << K << " expert " << e;
  }
}

TEST(MoERouter, BiasChangesSelectionButNotGates) {
  // s = (0.5, 0.75, 0.25, 0.5). Without bias top-2 is {1, 0} (0 beats 3 on the tie).
  const double l3 = std::log(3.0);
  Router plain(1, 4, 2, {0.0, l3, -l3, 0.0}, {0, 0, 0, 0});
  plain.run(1, 2.0f);
  auto g = plain.choice(0);
  ASSERT_EQ(g.size(), 2u);
  ASSERT_TRUE(g.count(0) && g.count(1));
  EXPECT_NEAR(g[1], 2.0 * 0.75 / 1.25, 1e-12);  // 1.2
  EXPECT_NEAR(g[0], 2.0 * 0.5 / 1.25, 1e-12);   // 0.8
  // Bias 0.6 on expert 2 lifts it to 0.85: selection {2, 1}; gates from the unbiased 0.25 and 0.75.
  Router biased(1, 4, 2, {0.0, l3, -l3, 0.0}, {0, 0, 0.6, 0});
  biased.run(1, 2.0f);
  g = biased.choice(0);
  ASSERT_EQ(g.size(), 2u);
  ASSERT_TRUE(g.count(1) && g.count(2));
  EXPECT_NEAR(g[2], 2.0 * 0.25 / 1.0, 1e-12);  // 0.5
  EXPECT_NEAR(g[1], 2.0 * 0.75 / 1.0, 1e-12);  // 1.5
  // Scores are unbiased too.
  EXPECT_NEAR(biased.scores[2], 0.25, 1e-12);
  // The first choice is the highest s + b.
  EXPECT_EQ(biased.topk[0], 2);
}

TEST(MoERouter, BalanceLossHandComputed) {
  // Two sequences of two tokens, two experts, top-1, alpha 0.5.
  // Sequence 0: both tokens have s = (0.5, 0.75) -> both choose expert 1: f = (0, 2), P = (0.4, 0.6),
  //             sum f P = 1.2.
  // Sequence 1: s = (0.5, 0.75) then (0.75, 0.5): f = (1, 1), P = (0.5, 0.5), sum f P = 1.0.
  // loss = alpha * mean over sequences = 0.5 * 1.1 = 0.55.
  const double l3 = std::log(3.0);
  Router r(4, 2, 1, {0.0, l3, 0.0, l3, 0.0, l3, l3, 0.0}, {0, 0});
  const double loss = r.run(2, 1.0f, 0.5f);
  EXPECT_NEAR(loss, 0.55, 1e-12);
  EXPECT_EQ(r.topk.data, (std::vector<int32_t>{1, 1, 1, 0}));
  // With alpha = 0 there is no balance loss; with top_k = E every f_i = 1 and the loss is alpha.
  Router r0(4, 2, 1, {0.0, l3, 0.0, l3, 0.0, l3, l3, 0.0}, {0, 0});
  EXPECT_EQ(r0.run(2, 1.0f, 0.0f), 0.0);
  Router all(4, 2, 2, {0.0, l3, 0.0, l3, 0.0, l3, l3, 0.0}, {0, 0});
  EXPECT_NEAR(all.run(2, 1.0f, 0.5f), 0.5, 1e-12);
}

TEST(MoERouter, BadArgumentsThrowValueError) {
  Router too_many(2, 3, 4, std::vector<double>(6, 0.0), {0, 0, 0});  // top_k > E
  EXPECT_THROW(too_many.run(), nw::ValueError);
  Router uneven(3, 3, 1, std::vector<double>(9, 0.0), {0, 0, 0});  // 3 tokens do not split into 2 sequences
  EXPECT_THROW(uneven.run(2), nw::ValueError);
}

// ---------------------------------------------------------------------------------------------
// The fused router + dispatch is the two ops in sequence, with the loss accumulated into a tensor.
TEST(MoERoute, Float32EqualsRouterThenDispatchBitForBit) {
  const int batch = 2;
  const int64_t T = 37, N = batch * T, E = 9, K = 3;
  std::vector<float> logits(N * E), bias(E);
  for (int64_t i = 0; i < N * E; ++i) logits[i] = static_cast<float>(1.5 * nw::rng_normal(51, 1, i));
  for (int64_t e = 0; e < E; ++e) bias[e] = static_cast<float>(0.1 * nw::rng_normal(51, 2, e));
  for (int64_t e = 0; e < E; ++e) logits[4 * E + e] = 0.5f;  // a token whose scores all tie
  auto f32 = [](std::vector<float>& v, std::vector<int64_t> s) {
    return nw::Tensor(v.data(), nw::DType::F32, nw::Device::CPU, s);
  };
  std::vector<float> s1(N * E), g1(N * K), s2(N * E), g2(N * K);
  HostI32 k1({N, K}), c1({E}), o1({E + 1}), r1({N * K}), t1({N * K});
  HostI32 k2({N, K}), c2({E}), o2({E + 1}), r2({N * K}), t2({N * K});
  const double loss = nw::moe_router_forward(f32(s1, {N, E}), k1.t(), f32(g1, {N, K}), f32(logits, {N, E}),
                                             f32(bias, {E}), batch, 2.5f, 0.01f);
  nw::moe_dispatch(c1.t(), o1.t(), r1.t(), t1.t(), k1.t());
  HostTensor balance({1}, 0.25);
  nw::moe_route(f32(s2, {N, E}), k2.t(), f32(g2, {N, K}), c2.t(), o2.t(), r2.t(), t2.t(), balance.t(),
                f32(logits, {N, E}), f32(bias, {E}), batch, 2.5f, 0.01f);
  EXPECT_EQ(s2, s1);
  EXPECT_EQ(g2, g1);
  EXPECT_EQ(k2.data, k1.data);
  EXPECT_EQ(c2.data, c1.data);
  EXPECT_EQ(o2.data, o1.data);
  EXPECT_EQ(r2.data, r1.data);
  EXPECT_EQ(t2.data, t1.data);
  EXPECT_GT(loss, 0.0);
  EXPECT_EQ(balance[0], 0.25 + loss) << "the loss is added to what balance held";
}

TEST(MoERoute, BadArgumentsThrowValueError) {
  const int64_t N = 4, E = 3, K = 2;
  HostTensor logits({N, E}), bias({E}), scores({N, E}), gates({N, K}), balance({1}), balance2({2});
  HostI32 topk({N, K}), counts({E}), offsets({E + 1}), rows({N * K}), tokens({N * K}), short_offsets({E});
  auto route = [&](HostTensor& bal, HostI32& offs) {
    nw::moe_route(scores.t(), topk.t(), gates.t(), counts.t(), offs.t(), rows.t(), tokens.t(), bal.t(), logits.t(),
                  bias.t(), 2, 1.0f, 0.01f);
  };
  EXPECT_NO_THROW(route(balance, offsets));
  EXPECT_THROW(route(balance2, offsets), nw::ValueError);
  EXPECT_THROW(route(balance, short_offsets), nw::ValueError);
  std::vector<float> bal32(1);
  EXPECT_THROW(nw::moe_route(scores.t(), topk.t(), gates.t(), counts.t(), offsets.t(), rows.t(), tokens.t(),
                             nw::Tensor(bal32.data(), nw::DType::F32, nw::Device::CPU, {1}), logits.t(), bias.t(), 2,
                             1.0f, 0.01f),
               nw::ValueError);
}

// ---------------------------------------------------------------------------------------------
TEST(MoEUpdateBias, HandComputedSignUpdate) {
  // mean = 3: expert 0 is over-loaded (down), 1 under-loaded (up), 2 and 3 exactly at the mean (unchanged).
  HostTensor bias({4});
  bias.data = {0.1, -0.2, 0.3, 0.0};
  std::vector<int64_t> counts = {5, 1, 3, 3};
  nw::Tensor ct(counts.data(), nw::DType::I64, nw::Device::CPU, {4});
  nw::moe_update_bias(bias.t(), ct, 0.25f);
  EXPECT_EQ(bias.data, (std::vector<double>{0.1 - 0.25, -0.2 + 0.25, 0.3, 0.0}));
  // A fractional mean (1.5): both move, by exactly gamma.
  HostTensor b2({2});
  std::vector<int64_t> c2 = {1, 2};
  nw::moe_update_bias(b2.t(), nw::Tensor(c2.data(), nw::DType::I64, nw::Device::CPU, {2}), 0.5f);
  EXPECT_EQ(b2.data, (std::vector<double>{0.5, -0.5}));
  // gamma = 0 never moves anything; all-equal counts never move anything.
  nw::moe_update_bias(bias.t(), ct, 0.0f);
  EXPECT_EQ(bias.data, (std::vector<double>{0.1 - 0.25, -0.2 + 0.25, 0.3, 0.0}));
  std::vector<int64_t> even = {7, 7, 7, 7};
  nw::moe_update_bias(bias.t(), nw::Tensor(even.data(), nw::DType::I64, nw::Device::CPU, {4}), 1.0f);
  EXPECT_EQ(bias.data, (std::vector<double>{0.1 - 0.25, -0.2 + 0.25, 0.3, 0.0}));
}

TEST(MoEUpdateBias, Float32BiasAndCountDtypeChecked) {
  std::vector<float> bias = {0.0f, 0.0f, 0.0f};
  std::vector<int64_t> counts = {0, 10, 2};  // mean 4
  nw::moe_update_bias(nw::Tensor(bias.data(), nw::DType::F32, nw::Device::CPU, {3}),
                      nw::Tensor(counts.data(), nw::DType::I64, nw::Device::CPU, {3}), 1e-3f);
  EXPECT_EQ(bias, (std::vector<float>{1e-3f, -1e-3f, 1e-3f}));
  std::vector<int32_t> counts32 = {0, 10, 2};
  EXPECT_THROW(nw::moe_update_bias(nw::Tensor(bias.data(), nw::DType::F32, nw::Device::CPU, {3}),
                                   nw::Tensor(counts32.data(), nw::DType::I32, nw::Device::CPU, {3}), 1e-3f),
               nw::ValueError);
}
