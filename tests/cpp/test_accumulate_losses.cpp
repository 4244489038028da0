// The loss accumulation op (ops/accumulate_losses.h) on the CPU: hand-computed sums, weighted and not,
// the divisor (0 adds nothing), the balance loss, accumulation over calls, the token order of the sum, and
// bad arguments.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "ops/accumulate_losses.h"

namespace {
template <typename T>
nw::Tensor host(std::vector<T>& v) {
  return nw::Tensor(v.data(), nw::dtype_of<T>(), nw::Device::CPU, {int64_t(v.size())});
}
}  // namespace

TEST(AccumulateLosses, HandComputedSums) {
  std::vector<float> losses{1, 2, 3, 4}, weights{0.5f, -1, 2, 0};
  std::vector<double> acc{0, 0}, four{4}, one{1}, balance{0.25};
  nw::accumulate_losses(host(acc), host(losses), nw::Tensor(), host(four), host(balance));
  EXPECT_EQ(acc, (std::vector<double>{2.5, 0.25})) << "the mean: (1 + 2 + 3 + 4) / 4";
  nw::accumulate_losses(host(acc), host(losses), host(weights), host(one), host(balance));
  EXPECT_EQ(acc, (std::vector<double>{7.0, 0.5})) << "plus the weighted sum 0.5 - 2 + 6 + 0 = 4.5";
  nw::accumulate_losses(host(acc), host(losses), nw::Tensor(), host(one), nw::Tensor());
  EXPECT_EQ(acc, (std::vector<double>{17.0, 0.5})) << "no balance: its sum stays";
}

TEST(AccumulateLosses, DivisorZeroAddsNothing) {
  std::vector<float> losses{0, 0, 0};  // every target ignored
  std::vector<double> acc{1, 2}, zero{0}, balance{0.5};
  nw::accumulate_losses(host(acc), host(losses), nw::Tensor(), host(zero), host(balance));
  EXPECT_EQ(acc, (std::vector<double>{1, 2.5})) << "0 / 0 must not turn the sum into NaN";
}

// In token order 1e16 + 1 rounds back to 1e16 and the sum ends at 1; pairwise or from the end it would be
// 0: the order is part of the result, and token order is the one the model's loss has always been summed in.
TEST(AccumulateLosses, Float64InTokenOrder) {
  std::vector<double> losses{1e16, 1, -1e16, 1}, acc{0, 0}, one{1};
  nw::accumulate_losses(host(acc), host(losses), nw::Tensor(), host(one), nw::Tensor());
  EXPECT_EQ(acc[0], 1.0);
  std::vector<double> weights{1, 1, 1, 1};
  nw::accumulate_losses(host(acc), host(losses), host(weights), host(one), nw::Tensor());
  EXPECT_EQ(acc[0], 2.0);
}

TEST(AccumulateLosses, BadArgumentsThrowValueError) {
  std::vector<float> losses{1, 2, 3}, short_w{1, 2}, acc_f32{0, 0}, one_f32{1};
  std::vector<double> acc{0, 0}, acc3{0, 0, 0}, one{1}, balance2{0, 0}, weights_f64{1, 1, 1};
  EXPECT_THROW(nw::accumulate_losses(host(acc3), host(losses), nw::Tensor(), host(one), nw::Tensor()),
               nw::ValueError) << "acc of three";
  EXPECT_THROW(nw::accumulate_losses(host(acc_f32), host(losses), nw::Tensor(), host(one), nw::Tensor()),
               nw::ValueError) << "acc in float32";
  EXPECT_THROW(nw::accumulate_losses(host(acc), host(losses), nw::Tensor(), host(one_f32), nw::Tensor()),
               nw::ValueError) << "divisor in float32";
  EXPECT_THROW(nw::accumulate_losses(host(acc), host(losses), nw::Tensor(), nw::Tensor(), nw::Tensor()),
               nw::ValueError) << "no divisor";
  EXPECT_THROW(nw::accumulate_losses(host(acc), host(losses), host(short_w), host(one), nw::Tensor()),
               nw::ValueError) << "weights shorter than losses";
  EXPECT_THROW(nw::accumulate_losses(host(acc), host(losses), host(weights_f64), host(one), nw::Tensor()),
               nw::ValueError) << "weights in another dtype than losses";
  EXPECT_THROW(nw::accumulate_losses(host(acc), host(losses), nw::Tensor(), host(one), host(balance2)),
               nw::ValueError) << "balance of two";
  EXPECT_EQ(acc, (std::vector<double>{0, 0})) << "a rejected call changes nothing";
}
