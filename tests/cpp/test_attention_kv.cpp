// attention_forward_kv (decoding with a KV cache) against attention_forward on the full sequence.
#include <gtest/gtest.h>

#include <vector>

#include "core/rng.h"
#include "ops/attention.h"

namespace {

using nw::DType;
using nw::Device;
using nw::Tensor;

std::vector<double> randn(size_t n, uint64_t stream) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = nw::rng_normal(7, stream, i);
  return v;
}

void check_last_rows(int window) {
  const int64_t B = 2, T = 9, H = 4, KVH = 2, D = 8, Tq = 3, cap = 12;
  auto q = randn(B * T * H * D, 1), k = randn(B * T * KVH * D, 2), v = randn(B * T * KVH * D, 3);
  std::vector<double> y(B * T * H * D), lse(B * H * T);
  nw::attention_forward(Tensor(y.data(), DType::F64, Device::CPU, {B, T, H, D}),
                        Tensor(lse.data(), DType::F64, Device::CPU, {B, H, T}),
                        Tensor(q.data(), DType::F64, Device::CPU, {B, T, H, D}),
                        Tensor(k.data(), DType::F64, Device::CPU, {B, T, KVH, D}),
                        Tensor(v.data(), DType::F64, Device::CPU, {B, T, KVH, D}), window);
  // A cache with spare rows (cap > T) holding all T keys; queries are the last Tq positions.
  std::vector<double> kc(B * cap * KVH * D, 1e9), vc(B * cap * KVH * D, 1e9), qlast(B * Tq * H * D), ylast(B * Tq * H * D);
  for (int64_t b = 0; b < B; ++b) {
    std::copy_n(&k[b * T * KVH * D], T * KVH * D, &kc[b * cap * KVH * D]);
    std::copy_n(&v[b * T * KVH * D], T * KVH * D, &vc[b * cap * KVH * D]);
    std::copy_n(&q[(b * T + T - Tq) * H * D], Tq * H * D, &qlast[b * Tq * H * D]);
  }
  nw::attention_forward_kv(Tensor(ylast.data(), DType::F64, Device::CPU, {B, Tq, H, D}),
                           Tensor(qlast.data(), DType::F64, Device::CPU, {B, Tq, H, D}),
                           Tensor(kc.data(), DType::F64, Device::CPU, {B, cap, KVH, D}),
                           Tensor(vc.data(), DType::F64, Device::CPU, {B, cap, KVH, D}), T, window);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq * H * D; ++i)
      EXPECT_NEAR(ylast[b * Tq * H * D + i], y[(b * T + T - Tq) * H * D + i], 1e-12) << "b=" << b << " i=" << i;
}

TEST(AttentionKV, LastRowsMatchFullCausal) { check_last_rows(0); }
TEST(AttentionKV, LastRowsMatchSlidingWindow) { check_last_rows(3); }

TEST(AttentionKV, RejectsMoreQueriesThanKeys) {
  std::vector<double> buf(2 * 4 * 2 * 8);
  Tensor q(buf.data(), DType::F64, Device::CPU, {1, 4, 2, 8});
  Tensor kv(buf.data(), DType::F64, Device::CPU, {1, 8, 2, 8});
  EXPECT_THROW(nw::attention_forward_kv(q, q, kv, kv, 3, 0), nw::ValueError);
  EXPECT_THROW(nw::attention_forward_kv(q, q, kv, kv, 9, 0), nw::ValueError);
}

}  // namespace
