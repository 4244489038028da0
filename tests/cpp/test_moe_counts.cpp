// moe_accumulate_counts: per-step routing counts summed over micro-batches; moe_update_bias with
// all-zero counts (no training tokens) leaves the bias alone.
#include <gtest/gtest.h>

#include <vector>

#include "ops/moe_router.h"

namespace {

using nw::DType;
using nw::Device;
using nw::Tensor;

TEST(MoeCounts, AccumulatesOverMicroBatches) {
  std::vector<int64_t> total = {5, 0, 2};
  std::vector<int32_t> a = {1, 2, 3}, b = {0, 4, 1};
  const Tensor t(total.data(), DType::I64, Device::CPU, {3});
  nw::moe_accumulate_counts(t, Tensor(a.data(), DType::I32, Device::CPU, {3}));
  nw::moe_accumulate_counts(t, Tensor(b.data(), DType::I32, Device::CPU, {3}));
  EXPECT_EQ(total, (std::vector<int64_t>{6, 6, 6}));
}

TEST(MoeCounts, RejectsMismatchedShapes) {
  std::vector<int64_t> total(3);
  std::vector<int32_t> c(4);
  EXPECT_THROW(nw::moe_accumulate_counts(Tensor(total.data(), DType::I64, Device::CPU, {3}),
                                         Tensor(c.data(), DType::I32, Device::CPU, {4})),
               nw::ValueError);
  EXPECT_THROW(nw::moe_accumulate_counts(Tensor(total.data(), DType::I64, Device::CPU, {3}),
                                         Tensor(total.data(), DType::I64, Device::CPU, {3})),
               nw::ValueError);
}

TEST(MoeCounts, ZeroCountsLeaveTheBias) {
  std::vector<float> bias = {0.1f, -0.2f, 0.3f};
  std::vector<int64_t> counts = {0, 0, 0};
  nw::moe_update_bias(Tensor(bias.data(), DType::F32, Device::CPU, {3}),
                      Tensor(counts.data(), DType::I64, Device::CPU, {3}), 0.5f);
  EXPECT_EQ(bias, (std::vector<float>{0.1f, -0.2f, 0.3f}));
}

}  // namespace
