// The Model on tiny configurations: bit-identical losses for equal seeds, the loss at initialisation
// (~ln vocab), config validation (ValueError), float64 whole-model gradients against finite
// differences of loss + balance loss, the head loss in chunks against one chunk and its activation
// memory, gradient accumulation, the routing-count bookkeeping, and the optimizer step over a model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/model.h"
#include "ops/moe_router.h"
#include "ops/optimizer_ops.h"
#include "train/optimizer.h"
#include "tiny_model_config.h"

namespace {
struct Batch {
  int B, T;
  std::vector<int32_t> tokens, targets;
  Batch(int b, int t, int vocab, uint64_t seed, int ignored = 0) : B(b), T(t), tokens(b * t), targets(b * t) {
    for (int i = 0; i < b * t; ++i) {
      tokens[i] = int32_t(nw::rng_bits(seed, 1, i) % vocab);
      targets[i] = int32_t(nw::rng_bits(seed, 2, i) % vocab);
    }
    for (int i = 0; i < ignored; ++i) targets[(i * 5 + 1) % (b * t)] = -1;
  }
};

std::vector<char> bytes_of(const nw::Arena& a) {
  const nw::Tensor f = a.flat();
  std::vector<char> out(f.nbytes());
  std::memcpy(out.data(), f.data, f.nbytes());
  return out;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }
}  // namespace

TEST(Model, SameSeedGivesSameLossBits) {
  const nw::ModelConfig cfg = tiny_moe_config();
  const Batch batch(2, 8, cfg.vocab_size, 3, 3);
  for (nw::DType dt : {nw::DType::F64, nw::DType::F32}) {
    nw::Model a(cfg, 7, nw::Device::CPU, dt), b(cfg, 7, nw::Device::CPU, dt), c(cfg, 8, nw::Device::CPU, dt);
    const nw::LossInfo la = a.forward_backward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    const nw::LossInfo lb = b.forward_backward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    const nw::LossInfo lc = c.forward_backward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    EXPECT_TRUE(same_bits(la.loss, lb.loss)) << la.loss << " vs " << lb.loss;
    EXPECT_TRUE(same_bits(la.balance_loss, lb.balance_loss));
    EXPECT_EQ(la.n_targets, 13);
    EXPECT_EQ(bytes_of(a.params()), bytes_of(b.params()));
    EXPECT_EQ(bytes_of(a.grads()), bytes_of(b.grads())) << "gradients must be bit-identical too";
    EXPECT_NE(la.loss, lc.loss) << "a different seed must give a different model";
    // The same model again, after zero_grad: same loss and gradients.
    const std::vector<char> g1 = bytes_of(a.grads());
    a.zero_grad();
    const nw::LossInfo la2 = a.forward_backward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    EXPECT_TRUE(same_bits(la.loss, la2.loss));
    EXPECT_EQ(g1, bytes_of(a.grads()));
  }
}

TEST(Model, InitialLossNearLnVocab) {
  const nw::ModelConfig cfg = tiny_moe_config();
  nw::Model m(cfg, 1);
  const Batch batch(4, 8, cfg.vocab_size, 11);
  const nw::LossInfo l = m.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  // Unit-variance logits give ln V + ~0.5; anything far from ln V means a broken init or loss.
  EXPECT_GT(l.loss, std::log(50.0) - 0.25);
  EXPECT_LT(l.loss, std::log(50.0) + 1.0);
  EXPECT_EQ(l.n_targets, 32);
  EXPECT_GT(l.balance_loss, 0.0);
  EXPECT_LT(l.balance_loss, 10 * cfg.balance_alpha) << "sum f_i P_i is ~1 at a balanced start";
}

TEST(Model, ForwardMatchesForwardBackwardLoss) {
  const nw::ModelConfig cfg = tiny_moe_config();
  nw::Model m(cfg, 2, nw::Device::CPU, nw::DType::F64);
  const Batch batch(2, 8, cfg.vocab_size, 12, 2);
  std::vector<float> per_token(16, -1.0f);
  const nw::LossInfo f = m.forward(batch.tokens.data(), batch.targets.data(), 2, 8, per_token.data());
  const nw::LossInfo fb = m.forward_backward(batch.tokens.data(), batch.targets.data(), 2, 8);
  EXPECT_NEAR(f.loss, fb.loss, 1e-12);
  EXPECT_NEAR(f.balance_loss, fb.balance_loss, 1e-15);
  double sum = 0;
  for (int i = 0; i < 16; ++i) {
    if (batch.targets[i] < 0) {
      EXPECT_EQ(per_token[i], 0.0f);
    } else {
      EXPECT_GT(per_token[i], 0.0f);
    }
    sum += per_token[i];
  }
  EXPECT_NEAR(sum / f.n_targets, f.loss, 1e-5);
}

TEST(Model, InvalidConfigsThrowValueError) {
  auto expect_invalid = [](nw::ModelConfig c, const char* what) {
    EXPECT_THROW(c.validate(), nw::ValueError) << what;
    EXPECT_THROW(nw::Model(c, 0), nw::ValueError) << what;
  };
  EXPECT_NO_THROW(tiny_moe_config().validate());
  nw::ModelConfig c = tiny_moe_config();
  c.top_k = 5;  // > n_experts
  expect_invalid(c, "top_k > n_experts");
  c = tiny_moe_config();
  c.n_head = 3;  // d_model 16 is not divisible by 3 (n_kv_head 1 divides 3)
  expect_invalid(c, "d_model % n_head");
  c = tiny_moe_config();
  c.activation = "gelu";
  expect_invalid(c, "activation");
  c = tiny_moe_config();
  c.window_pattern = "LX";
  expect_invalid(c, "window_pattern LX");
  c = tiny_moe_config();
  c.window_pattern = "";
  expect_invalid(c, "empty window_pattern");
  c = tiny_moe_config();
  c.n_kv_head = 3;  // 2 query heads do not split into 3 kv groups
  expect_invalid(c, "n_head % n_kv_head");
  c = tiny_moe_config();
  c.head_dim = 7;
  expect_invalid(c, "odd head_dim");
  // Valid variations still construct.
  c = tiny_moe_config();
  c.window_pattern = "SL";
  c.short_window = 3;
  c.activation = "swiglu";
  EXPECT_NO_THROW(nw::Model(c, 0));
  EXPECT_THROW(nw::Model(tiny_moe_config(), 0, nw::Device::CPU, nw::DType::BF16), nw::ValueError);
}

TEST(Model, InvalidBatchesThrowValueError) {
  const nw::ModelConfig cfg = tiny_moe_config();
  nw::Model m(cfg, 0);
  Batch ok(1, 8, cfg.vocab_size, 1);
  Batch too_long(1, 9, cfg.vocab_size, 1);
  EXPECT_THROW(m.forward(too_long.tokens.data(), too_long.targets.data(), 1, 9), nw::ValueError);
  std::vector<int32_t> bad_tokens = ok.tokens;
  bad_tokens[3] = 50;
  EXPECT_THROW(m.forward(bad_tokens.data(), ok.targets.data(), 1, 8), nw::ValueError);
  std::vector<int32_t> bad_targets = ok.targets;
  bad_targets[2] = -2;
  EXPECT_THROW(m.forward_backward(ok.tokens.data(), bad_targets.data(), 1, 8), nw::ValueError);
  EXPECT_NO_THROW(m.forward(ok.tokens.data(), ok.targets.data(), 1, 8));
}

// ---------------------------------------------------------------------------------------------
namespace {
// Every parameter is moved off its init (zero output projections would hide most gradients), then
// d(loss + balance_loss)/d(theta) from forward_backward is compared with central differences of
// forward() on a spread of elements of every tensor.
void check_model_gradients(const nw::ModelConfig& cfg, uint64_t seed, int64_t head_chunk_rows = 0) {
  nw::Model m(cfg, seed, nw::Device::CPU, nw::DType::F64);
  m.set_head_chunk_rows(head_chunk_rows);
  const nw::Arena& P = m.params();
  for (int i = 0; i < P.layout().size(); ++i) {
    const nw::Tensor v = P.view(i);
    double* p = v.ptr<double>();
    for (int64_t j = 0; j < v.numel(); ++j) p[j] += 0.3 * nw::rng_normal(seed + 100, i, j);
  }
  const Batch batch(2, 8, cfg.vocab_size, seed, 2);
  m.zero_grad();
  m.forward_backward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  const double eps = 1e-6;
  auto total_loss = [&] {
    const nw::LossInfo l = m.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    return l.loss + l.balance_loss;
  };
  const nw::Arena& G = m.grads();
  for (int i = 0; i < P.layout().size(); ++i) {
    const nw::LayoutEntry& e = P.layout()[i];
    double* p = P.view(i).ptr<double>();
    const double* g = G.view(i).ptr<double>();
    const int64_t picks = std::min<int64_t>(e.numel, 8);
    double max_num = 0, max_err = 0;
    for (int64_t k = 0; k < picks; ++k) {
      const int64_t j = (k * e.numel) / picks + (k * 7) % std::max<int64_t>(1, e.numel / picks);
      const double x0 = p[j];
      p[j] = x0 + eps;
      const double lp = total_loss();
      p[j] = x0 - eps;
      const double lm = total_loss();
      p[j] = x0;
      const double num = (lp - lm) / (2 * eps);
      max_num = std::max(max_num, std::fabs(num));
      max_err = std::max(max_err, std::fabs(num - g[j]));
      EXPECT_NEAR(g[j], num, 1e-6 + 1e-4 * std::fabs(num)) << e.name << "[" << j << "]";
    }
    EXPECT_GT(max_num, 1e-6) << e.name << ": gradient ~0 at the checked elements; the check is vacuous";
  }
}
}  // namespace

TEST(ModelGradients, Float64MatchesFiniteDifferences) {
  nw::ModelConfig cfg = tiny_moe_config();
  cfg.balance_alpha = 0.1f;  // large enough that a wrong balance gradient shows
  check_model_gradients(cfg, 5);
}

TEST(ModelGradients, Float64VariantSwiGLUTiedSlidingWindowTwoShared) {
  nw::ModelConfig cfg = tiny_moe_config();
  cfg.activation = "swiglu";
  cfg.tie_embeddings = true;
  cfg.window_pattern = "SL";
  cfg.short_window = 3;
  cfg.n_shared = 2;
  cfg.route_scale = 2.5f;
  cfg.balance_alpha = 0.1f;
  cfg.softcap = 0.0f;
  check_model_gradients(cfg, 6);
}

// The head loss in chunks of 5 rows over the 16 tokens (5, 5, 5, 1), the head tied to the embedding (its
// chunks accumulate onto the embedding's gradient): the same gradients.
TEST(ModelGradients, Float64ChunkedHeadLossMatchesFiniteDifferences) {
  nw::ModelConfig cfg = tiny_moe_config();
  cfg.balance_alpha = 0.1f;
  cfg.tie_embeddings = true;
  check_model_gradients(cfg, 7, 5);
}

namespace {
struct ChunkedRun {
  double weighted_loss, eval_loss;
  std::vector<double> grads;
};
template <typename T>
std::vector<double> flat_values(const nw::Arena& a) {
  const nw::Tensor f = a.flat();
  return std::vector<double>(f.ptr<T>(), f.ptr<T>() + f.numel());
}
// forward_backward twice (gradient accumulation over two micro-batches, the second weighted per token),
// then forward, with the head loss in chunks of `rows` (0: one chunk at these sizes).
ChunkedRun chunked_run(const nw::ModelConfig& cfg, nw::DType dt, nw::Precision p, int64_t rows) {
  nw::Model m(cfg, 21, nw::Device::CPU, dt);
  m.set_precision(p);
  m.set_head_chunk_rows(rows);
  const Batch a(2, 8, cfg.vocab_size, 21, 3), b(2, 8, cfg.vocab_size, 22, 1);
  std::vector<float> w(16);
  for (int i = 0; i < 16; ++i) w[i] = float(nw::rng_normal(23, 0, i)) / 16;
  m.forward_backward(a.tokens.data(), a.targets.data(), 2, 8, 0.5f);
  ChunkedRun r;
  r.weighted_loss = m.forward_backward(b.tokens.data(), b.targets.data(), 2, 8, 0.5f, w.data()).loss;
  r.eval_loss = m.forward(a.tokens.data(), a.targets.data(), 2, 8).loss;
  r.grads = dt == nw::DType::F64 ? flat_values<double>(m.grads()) : flat_values<float>(m.grads());
  return r;
}
}  // namespace

// Forced small chunks against one chunk, untied and tied head, fp32 and bf16 operands. Per token the chunked
// path computes what one chunk does (its GEMMs only see fewer rows), and the head's gradient sums the chunks
// one after the other instead of in one GEMM, so results agree to the dtype's rounding: a few units in the
// last place of the largest gradient (float32: measured up to 8e-8 of it). Tolerances: 1e-12 of the largest
// gradient in float64, 1e-6 in float32; a lost, doubled or misplaced chunk is off by O(1) of it.
TEST(Model, ChunkedHeadLossMatchesOneChunk) {
  struct Case {
    nw::DType dtype;
    nw::Precision precision;
    double tol;
  };
  for (bool tied : {false, true}) {
    nw::ModelConfig cfg = tiny_moe_config();
    cfg.tie_embeddings = tied;
    for (const Case& k : {Case{nw::DType::F64, nw::Precision::FP32, 1e-12},
                          Case{nw::DType::F32, nw::Precision::FP32, 1e-6},
                          Case{nw::DType::F32, nw::Precision::BF16, 1e-6}}) {
      const ChunkedRun one = chunked_run(cfg, k.dtype, k.precision, 0);
      double mx = 0;
      for (double g : one.grads) mx = std::max(mx, std::fabs(g));
      ASSERT_GT(mx, 1e-3);
      for (int64_t rows : {1, 3, 7}) {
        const std::string what = std::string(tied ? "tied " : "untied ") + nw::dtype_name(k.dtype) + " " +
                                 nw::precision_name(k.precision) + ", chunks of " + std::to_string(rows);
        const ChunkedRun c = chunked_run(cfg, k.dtype, k.precision, rows);
        EXPECT_NEAR(c.eval_loss, one.eval_loss, k.tol * one.eval_loss) << what;
        EXPECT_NEAR(c.weighted_loss, one.weighted_loss, k.tol * std::fabs(one.weighted_loss)) << what;
        for (size_t i = 0; i < one.grads.size(); ++i)
          ASSERT_NEAR(c.grads[i], one.grads[i], k.tol * mx) << what << ", gradient element " << i;
      }
    }
  }
}

// Training and loss evaluation hold one chunk of logits rows, the paths that return logits all of them: with
// chunks of 4 rows, doubling the tokens adds less than V floats per added token to the activations.
TEST(Model, ActivationsOfTheLossDoNotScaleWithTokensTimesVocab) {
  nw::ModelConfig cfg = tiny_moe_config();
  cfg.vocab_size = 4096;  // the logits dominate every other activation per token (16-wide model)
  nw::Model m(cfg, 3);
  m.set_head_chunk_rows(4);
  const Batch small(1, 8, cfg.vocab_size, 3), large(2, 8, cfg.vocab_size, 4);
  const size_t per_token_logits = size_t(cfg.vocab_size) * sizeof(float);
  m.forward_backward(small.tokens.data(), small.targets.data(), 1, 8);
  const size_t train_small = m.activation_bytes();
  m.forward_backward(large.tokens.data(), large.targets.data(), 2, 8);
  const size_t train_large = m.activation_bytes();
  m.forward(large.tokens.data(), large.targets.data(), 2, 8);
  EXPECT_EQ(m.activation_bytes(), train_large) << "evaluation plans the same chunk as training";
  std::vector<float> out(size_t(16) * cfg.vocab_size);
  m.logits(small.tokens.data(), 1, 8, out.data());
  const size_t logits_small = m.activation_bytes();
  m.logits(large.tokens.data(), 2, 8, out.data());
  const size_t logits_large = m.activation_bytes();
  EXPECT_GT(train_large, train_small);
  EXPECT_LT(train_large - train_small, 8 * per_token_logits) << "the loss's activations grow with N * V";
  EXPECT_GE(logits_large - logits_small, 8 * per_token_logits) << "logits() must hold all (N, V) logits";
  EXPECT_GE(logits_small, train_small + 4 * per_token_logits);
  // The chunk is the budget's share: at these sizes one chunk of all 16 rows.
  m.set_head_chunk_rows(0);
  m.forward_backward(large.tokens.data(), large.targets.data(), 2, 8);
  EXPECT_EQ(m.activation_bytes(), logits_large);
  EXPECT_THROW(m.set_head_chunk_rows(-1), nw::ValueError);
}

TEST(Model, GradientsAccumulateAndScale) {
  const nw::ModelConfig cfg = tiny_moe_config();
  nw::Model m(cfg, 4, nw::Device::CPU, nw::DType::F64);
  const Batch batch(2, 8, cfg.vocab_size, 4);
  m.forward_backward(batch.tokens.data(), batch.targets.data(), 2, 8, 1.0f);
  const nw::Tensor g = m.grads().flat();
  std::vector<double> g1(g.ptr<double>(), g.ptr<double>() + g.numel());
  m.forward_backward(batch.tokens.data(), batch.targets.data(), 2, 8, 0.5f);
  double max_g = 0;
  for (int64_t i = 0; i < g.numel(); ++i) {
    ASSERT_NEAR(g.ptr<double>()[i], 1.5 * g1[i], 1e-12 * (1 + std::fabs(g1[i]))) << i;
    max_g = std::max(max_g, std::fabs(g1[i]));
  }
  EXPECT_GT(max_g, 1e-3);
  m.zero_grad();
  for (int64_t i = 0; i < g.numel(); ++i) ASSERT_EQ(g.ptr<double>()[i], 0.0);
}

TEST(Model, RoutingCountsAndBalanceBiasUpdate) {
  const nw::ModelConfig cfg = tiny_moe_config();
  nw::Model m(cfg, 9);
  const Batch batch(2, 8, cfg.vocab_size, 9);
  // Evaluation does not count.
  m.forward(batch.tokens.data(), batch.targets.data(), 2, 8);
  auto stats = m.routing_stats();
  ASSERT_EQ(stats.size(), 1u);  // one MoE layer (layer 1)
  EXPECT_EQ(stats[0].layer, 1);
  int64_t total = 0;
  for (int64_t c : stats[0].tokens_per_expert) total += c;
  EXPECT_EQ(total, 0);
  // Two training micro-batches count 2 * N * K slots.
  m.forward_backward(batch.tokens.data(), batch.targets.data(), 2, 8);
  m.forward_backward(batch.tokens.data(), batch.targets.data(), 2, 8);
  stats = m.routing_stats();
  total = 0;
  for (int64_t c : stats[0].tokens_per_expert) total += c;
  EXPECT_EQ(total, 2 * 16 * cfg.top_k);
  const std::vector<int64_t> counts = stats[0].tokens_per_expert;
  for (double b : stats[0].bias) EXPECT_EQ(b, 0.0);
  // One bias update: each bias moves by exactly gamma toward balance (or stays at the mean).
  m.update_balance_bias(0.5f);
  stats = m.routing_stats();
  const double mean = double(total) / cfg.n_experts;
  for (int e = 0; e < cfg.n_experts; ++e) {
    const double expect = counts[e] < mean ? 0.5 : counts[e] > mean ? -0.5 : 0.0;
    EXPECT_EQ(stats[0].bias[e], expect) << "expert " << e << " count " << counts[e];
  }
  EXPECT_EQ(stats[0].tokens_per_expert, counts) << "after an update the stats show the last step's counts";
  EXPECT_THROW(m.update_balance_bias(-1.0f), nw::ValueError);
}

namespace {
void train_micro_batch(nw::Model& m, uint64_t seed) {
  const Batch b(2, 8, m.config().vocab_size, seed);
  m.forward_backward(b.tokens.data(), b.targets.data(), b.B, b.T);
}

std::vector<float> floats_of(const nw::Tensor& t) {
  std::vector<float> out(t.numel());
  std::memcpy(out.data(), t.data, t.nbytes());
  return out;
}

nw::Tensor host_tensor(std::vector<float>& v, const nw::Tensor& like) {
  const std::vector<int64_t> shape(like.shape, like.shape + like.ndim);
  return nw::Tensor(v.data(), nw::DType::F32, nw::Device::CPU, shape);
}

int first_of_kind(const nw::Model& m, nw::ParamKind kind) {
  for (int i = 0; i < m.params().layout().size(); ++i)
    if (m.kind(i) == kind) return i;
  return -1;
}
}  // namespace

// A step with a non-finite gradient norm is no step at all: parameters, optimizer states, balance biases
// and the routing counts keep their bits and the step is not counted, so the next step (bias correction
// of step 2, the counts of both micro-batches) equals that of a run that never attempted it.
TEST(OptimizerStep, NonFiniteStepChangesNothingAndIsNotCounted) {
  const nw::ModelConfig cfg = tiny_moe_config();
  nw::Model a(cfg, 9), b(cfg, 9);
  nw::Optimizer oa(a, {}), ob(b, {});
  for (nw::Model* m : {&a, &b}) train_micro_batch(*m, 1);
  oa.step({});
  ob.step({});
  for (nw::Model* m : {&a, &b}) {
    m->zero_grad();
    train_micro_batch(*m, 2);
  }
  static_cast<float*>(a.grads().flat().data)[3] = NAN;
  const std::vector<char> params = bytes_of(a.params()), m1 = bytes_of(oa.exp_avg()), v1 = bytes_of(oa.exp_avg_sq()),
                          biases = bytes_of(a.buffers());
  const std::vector<char> pending(static_cast<char*>(a.pending_counts().data),
                                  static_cast<char*>(a.pending_counts().data) + a.pending_counts().nbytes());
  EXPECT_TRUE(std::isnan(oa.step({0.5f, 2.0f, 0.9f, 0.1f})));
  EXPECT_EQ(oa.steps(), 1);
  EXPECT_EQ(bytes_of(a.params()), params);
  EXPECT_EQ(bytes_of(oa.exp_avg()), m1);
  EXPECT_EQ(bytes_of(oa.exp_avg_sq()), v1);
  EXPECT_EQ(bytes_of(a.buffers()), biases);
  EXPECT_EQ(std::memcmp(a.pending_counts().data, pending.data(), pending.size()), 0) << "the counts stay pending";
  for (nw::Model* m : {&a, &b}) {
    m->zero_grad();
    train_micro_batch(*m, 3);
  }
  const nw::StepArgs args{0.5f, 2.0f, 0.9f, 0.1f};
  EXPECT_TRUE(same_bits(oa.step(args), ob.step(args)));
  EXPECT_EQ(oa.steps(), 2);
  EXPECT_EQ(ob.steps(), 2);
  EXPECT_EQ(bytes_of(a.params()), bytes_of(b.params()));
  EXPECT_EQ(bytes_of(oa.exp_avg()), bytes_of(ob.exp_avg()));
  EXPECT_EQ(bytes_of(oa.exp_avg_sq()), bytes_of(ob.exp_avg_sq()));
  EXPECT_EQ(bytes_of(a.buffers()), bytes_of(b.buffers()));
}

// One step after set_steps (a resumed run) against the ops given the step's values by hand: AdamW at
// step set_steps + 1 with lr * lr_mult and weight_decay * wd_mult, Muon with the step's momentum, and the
// balance bias with the step's gamma; then the count moves on by one.
TEST(OptimizerStep, UsesTheStepsScalarsAndTheResumedStepCount) {
  const nw::ModelConfig cfg = tiny_moe_config();
  nw::Model m(cfg, 9);
  nw::OptimizerConfig oc;
  oc.grad_clip = 0;  // the gradients as they are
  oc.scalar.weight_decay = 0.1f;
  oc.muon_weight_decay = 0.05f;
  nw::Optimizer opt(m, oc);
  opt.set_steps(5);
  EXPECT_EQ(opt.steps(), 5);
  EXPECT_THROW(opt.set_steps(-1), nw::ValueError);
  train_micro_batch(m, 1);
  const int s = first_of_kind(m, nw::ParamKind::Scalar), w = first_of_kind(m, nw::ParamKind::Matrix);
  ASSERT_GE(s, 0);
  ASSERT_GE(w, 0);
  ASSERT_EQ(m.buffers().layout().size(), 1) << "tiny_config has one MoE layer";
  const nw::Tensor sp = m.params().view(s), wp = m.params().view(w);
  std::vector<float> s_param = floats_of(sp), s_grad = floats_of(m.grads().view(s)),
                     s_m = floats_of(opt.exp_avg().view(s)), s_v = floats_of(opt.exp_avg_sq().view(s)),
                     w_param = floats_of(wp), w_grad = floats_of(m.grads().view(w)),
                     w_mom = floats_of(opt.exp_avg().view(w)), bias = floats_of(m.buffers().view(0));
  std::vector<int64_t> counts(cfg.n_experts);
  std::memcpy(counts.data(), m.pending_counts().data, counts.size() * sizeof(int64_t));

  const nw::StepArgs args{0.5f, 2.0f, 0.9f, 0.25f};
  opt.step(args);
  EXPECT_EQ(opt.steps(), 6);

  nw::adamw_update(host_tensor(s_param, sp), host_tensor(s_grad, sp), host_tensor(s_m, sp), host_tensor(s_v, sp),
                   {oc.scalar.lr * 0.5f, oc.scalar.beta1, oc.scalar.beta2, oc.scalar.eps, 0.1f * 2.0f, 6});
  EXPECT_EQ(floats_of(sp), s_param) << "AdamW";
  ASSERT_EQ(wp.ndim, 2) << "tiny_config's first matrix is a dense one";
  const int64_t R = wp.size(0), C = wp.size(1);
  std::vector<float> ws(nw::muon_workspace_numel(R, C));
  const nw::Tensor w3(w_param.data(), nw::DType::F32, nw::Device::CPU, {1, R, C});
  nw::muon_update(w3, nw::Tensor(w_grad.data(), nw::DType::F32, nw::Device::CPU, {1, R, C}),
                  nw::Tensor(w_mom.data(), nw::DType::F32, nw::Device::CPU, {1, R, C}),
                  nw::Tensor(ws.data(), nw::DType::F32, nw::Device::CPU, {int64_t(ws.size())}),
                  {oc.muon_lr * 0.5f, 0.9f, 0.05f * 2.0f, oc.ns_steps, oc.nesterov});
  EXPECT_EQ(floats_of(wp), w_param) << "Muon";
  nw::moe_update_bias(nw::Tensor(bias.data(), nw::DType::F32, nw::Device::CPU, {cfg.n_experts}),
                      nw::Tensor(counts.data(), nw::DType::I64, nw::Device::CPU, {cfg.n_experts}), 0.25f);
  EXPECT_EQ(floats_of(m.buffers().view(0)), bias) << "balance bias";
  EXPECT_NE(bias, std::vector<float>(cfg.n_experts, 0.f)) << "the test must move the bias";
}
