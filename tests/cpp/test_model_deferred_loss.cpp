// forward_backward with defer_loss: the losses wait in sums on the device that take_loss_sums reads. Over
// several micro-batches (plain, with ignored targets, weighted, all targets ignored) the sums have the bits
// of the returned losses added in call order, and the gradients the bits of the non-deferred calls, in
// float64 and float32 with fp32 and bf16 operands; taking zeroes the sums; a returning call while deferred
// sums wait is an error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/model.h"
#include "tiny_model_config.h"

namespace {
constexpr int B = 2, T = 8, N = B * T;

struct MicroBatch {
  std::vector<int32_t> tokens, targets;
  std::vector<float> weights;  // empty: the mean loss
};

// kind 0..3: plain, 5 ignored targets, weighted (both signs) with 2 ignored, every target ignored.
MicroBatch micro_batch(int kind, int vocab) {
  MicroBatch m{std::vector<int32_t>(N), std::vector<int32_t>(N), {}};
  for (int i = 0; i < N; ++i) {
    m.tokens[i] = int32_t(nw::rng_bits(40 + kind, 1, i) % vocab);
    m.targets[i] = int32_t(nw::rng_bits(40 + kind, 2, i) % vocab);
  }
  if (kind == 1)
    for (int i = 0; i < 5; ++i) m.targets[(i * 3 + 1) % N] = -1;
  if (kind == 2) {
    m.targets[4] = m.targets[9] = -1;
    for (int i = 0; i < N; ++i) m.weights.push_back(float(nw::rng_normal(41, 0, i)) / N);
  }
  if (kind == 3)
    for (int32_t& t : m.targets) t = -1;
  return m;
}

nw::LossInfo run(nw::Model& m, const MicroBatch& mb, bool defer) {
  return m.forward_backward(mb.tokens.data(), mb.targets.data(), B, T, 0.25f,
                            mb.weights.empty() ? nullptr : mb.weights.data(), defer);
}

std::vector<char> grad_bytes(const nw::Model& m) {
  const nw::Tensor f = m.grads().flat();
  std::vector<char> out(f.nbytes());
  std::memcpy(out.data(), f.data, f.nbytes());
  return out;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }
}  // namespace

TEST(ModelDeferredLoss, SumsAndGradientsHaveTheBitsOfTheReturnedLosses) {
  const nw::ModelConfig cfg = tiny_moe_config();
  struct Case {
    nw::DType dtype;
    nw::Precision precision;
  };
  for (const Case& k : {Case{nw::DType::F64, nw::Precision::FP32}, Case{nw::DType::F32, nw::Precision::FP32},
                        Case{nw::DType::F32, nw::Precision::BF16}}) {
    const std::string what = std::string(nw::dtype_name(k.dtype)) + " " + nw::precision_name(k.precision);
    nw::Model returned(cfg, 5, nw::Device::CPU, k.dtype), deferred(cfg, 5, nw::Device::CPU, k.dtype);
    returned.set_precision(k.precision);
    deferred.set_precision(k.precision);
    double loss_sum = 0, balance_sum = 0;
    for (int kind : {0, 1, 2, 3, 0}) {
      const MicroBatch mb = micro_batch(kind, cfg.vocab_size);
      const nw::LossInfo r = run(returned, mb, false);
      loss_sum += r.loss;
      balance_sum += r.balance_loss;
      const nw::LossInfo d = run(deferred, mb, true);
      EXPECT_TRUE(std::isnan(d.loss) && std::isnan(d.balance_loss)) << what << ": a deferred call reads nothing";
      EXPECT_TRUE(std::isnan(deferred.last_loss().loss)) << what;
      EXPECT_EQ(d.n_targets, r.n_targets) << what;
      if (kind == 3) EXPECT_EQ(r.loss, 0.0) << what << ": no targets, no loss";
    }
    EXPECT_GT(balance_sum, 0) << what << ": the MoE layer's balance loss must take part";
    EXPECT_EQ(grad_bytes(deferred), grad_bytes(returned)) << what;
    const nw::LossSums s = deferred.take_loss_sums();
    EXPECT_TRUE(same_bits(s.loss, loss_sum)) << what << ": " << s.loss << " vs " << loss_sum;
    EXPECT_TRUE(same_bits(s.balance, balance_sum)) << what << ": " << s.balance << " vs " << balance_sum;
    const nw::LossSums again = deferred.take_loss_sums();
    EXPECT_EQ(again.loss, 0.0) << what << ": taking zeroes the sums";
    EXPECT_EQ(again.balance, 0.0) << what;
  }
}

TEST(ModelDeferredLoss, ReturningCallWhileSumsWaitThrows) {
  const nw::ModelConfig cfg = tiny_moe_config();
  nw::Model m(cfg, 6), reference(cfg, 6);
  const MicroBatch mb = micro_batch(0, cfg.vocab_size);
  run(m, mb, true);
  EXPECT_THROW(run(m, mb, false), nw::ValueError);
  const nw::LossSums s = m.take_loss_sums();
  const nw::LossInfo first = run(reference, mb, false);
  EXPECT_TRUE(same_bits(s.loss, first.loss));
  const nw::LossInfo second = run(m, mb, false);  // taken: returning calls work again
  EXPECT_TRUE(same_bits(second.loss, run(reference, mb, false).loss));
  EXPECT_EQ(m.take_loss_sums().loss, 0.0) << "a returning call leaves nothing in the sums";
}
