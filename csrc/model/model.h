// The nanowhale transformer: parameters in one arena, activations in one block allocated per batch
// shape, forward/backward composed from ops (device-agnostic: this file never calls a kernel).
#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/graphed_step.h"
#include "core/precision.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/sampler.h"
#include "ops/activation.h"

namespace nw {
struct StepControl;  // ops/optimizer_ops.h

// Which optimizer group a parameter belongs to (DESIGN.md §4).
enum class ParamKind { Embedding, Head, Router, Scalar, Matrix };

struct RoutingStats {
  int layer;
  std::vector<int64_t> tokens_per_expert;
  double max_violation;  // (max load - mean load) / mean load
  int dead_experts;      // experts that received no token
  std::vector<double> bias;
};

struct LossInfo {
  double loss = 0;          // mean cross-entropy over the targets that are not -1 (weighted: sum w_t * CE_t)
  double balance_loss = 0;  // sum over MoE layers of the sequence-wise balance loss
  int64_t n_targets = 0;
};

// Sums of the deferred forward_backward calls' losses since the last Model::take_loss_sums.
struct LossSums {
  double loss = 0;     // of the losses forward_backward returns (means, or weighted sums)
  double balance = 0;  // of their balance losses
};

class Model {
 public:
  Model(const ModelConfig& cfg, uint64_t seed, Device device = Device::CPU, DType dtype = DType::F32);
  ~Model();

  // Re-draws every parameter from the seed (counter-based: independent of device and layout order).
  void init_weights(uint64_t seed);

  // tokens, targets: (B, T) int32 on the host, T <= seq_len. Gradients are *added* to grads()
  // scaled by grad_scale (1/micro-batches for accumulation); routing counts accumulate for the
  // next balance-bias update. weights (B, T) on the host, finite, any sign: the loss is
  // sum_t w_t * CE_t over targets that are not -1; without weights, w_t = 1/#targets (the mean).
  // defer_loss: read nothing back; the loss and balance loss are added to sums on the device that
  // take_loss_sums() reads (the returned LossInfo and last_loss() then hold NaN losses). A call that
  // returns its loss while deferred sums wait is an error (it would mix them up).
  LossInfo forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T, float grad_scale = 1.0f,
                            const float* weights = nullptr, bool defer_loss = false);
  // The sums of the deferred calls' losses since the last take (one device read); zeroes them.
  LossSums take_loss_sums();
  // Evaluation: no gradients, no routing counts. token_losses (B*T) receives nats per target (0 where -1).
  LossInfo forward(const int32_t* tokens, const int32_t* targets, int B, int T, float* token_losses = nullptr);
  // Soft-capped logits (B*T, V) into out (host memory).
  void logits(const int32_t* tokens, int B, int T, float* out);
  // How tokens are routed (evaluation: no routing counts), for each MoE layer in order: the selected
  // experts into experts (M, B*T, K) in selection order, the router scores s = sigmoid(x·W_r) into
  // scores (M, B*T, E); M = number of MoE layers. Host memory.
  void route(const int32_t* tokens, int B, int T, int32_t* experts, float* scores);

  // Incremental decoding: runs tokens (B, T) as the next T positions of the cached sequences, appends
  // their keys/values to the cache and writes soft-capped logits (B*T, V) to out (host memory).
  void decode(const int32_t* tokens, int B, int T, KVCache& cache, float* out);
  // The same for B sequences at their own places in a larger cache (continuous batching): batch row b is
  // cache row rows[b], its tokens the positions at[b] .. at[b] + T - 1. The cache's length() is not used.
  void decode_rows(const int32_t* tokens, int B, int T, KVCache& cache, const int* rows, const int64_t* at,
                   float* out);
  KVCache new_kv_cache(int batch) const { return KVCache(cfg_, batch, dtype_, device_); }
  // Prompt (B, Tp) -> out (B, Tp + max_new): the prompt, then tokens sampled with a KV cache.
  // Stops early once every row has produced stop_token (>= 0); returns the generated length.
  int generate(const int32_t* prompt, int B, int Tp, int max_new, const SamplingParams& p, int stop_token,
               int32_t* out);

  void zero_grad() { grads_.zero(); }
  // b_i += gamma * sign(mean - count_i) from the counts accumulated since the last update; resets them.
  void update_balance_bias(float gamma);
  // The same as an optimizer step's device work: gamma is control.scalars.balance_gamma and nothing changes
  // (biases, counts) unless control.apply, both read where control lives (the model's device memory).
  void update_balance_bias(const StepControl& control);
  std::vector<RoutingStats> routing_stats() const;
  // Routing counts accumulated since the last bias update, (n_moe_layers, E) int64 on the model's device
  // (data parallelism sums them over the ranks before the update).
  const Tensor& pending_counts() const { return pending_counts_; }

  const ModelConfig& config() const { return cfg_; }
  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  // Matmul precision (core/precision.h) of every later forward and backward; fp32 by default. Weights,
  // gradients and optimizer state stay in the model's dtype (the master copy) in every precision.
  Precision precision() const { return prec_; }
  void set_precision(Precision p);
  // CUDA graphs of the training work (core/graphed_step.h) while on: forward_backward's device phase here,
  // the update in Optimizer. Off by default; on the CPU it changes nothing.
  void set_cuda_graphs(bool on);
  bool cuda_graphs() const { return cuda_graphs_; }
  const GraphedStep& train_graph() const { return train_graph_; }
  const Arena& params() const { return params_; }
  const Arena& grads() const { return grads_; }
  const Arena& buffers() const { return buffers_; }  // non-trained state: the balance biases
  ParamKind kind(int i) const { return kinds_[i]; }
  const LossInfo& last_loss() const { return last_; }  // of the latest forward or forward_backward
  // Bytes of the activations planned for the latest batch shape (the block itself is kept at its largest).
  // Losses and training hold one chunk of logits rows (ops/head_loss.h), not (B*T, V).
  size_t activation_bytes() const;
  // Rows per chunk of the fused head loss; 0 (the default) picks them from kHeadLossChunkBytes. Tests force
  // small chunks to compare the chunked path with a single chunk.
  void set_head_chunk_rows(int64_t rows);
  // Activations are shared by every call: callers that may run on several threads (the bindings) hold
  // this around each compute call, so concurrent generations interleave step by step instead of racing.
  std::mutex& compute_mutex() const { return compute_mutex_; }

 private:
  struct Acts;
  void check_batch(const int32_t* tokens, const int32_t* targets, int B, int T) const;
  // (Re)allocates activations for a batch shape; full_logits: room for all (B*T, V) logits (the paths that
  // return them), else for one chunk of the fused head loss.
  void prepare(int B, int T, bool full_logits);
  // Copies tokens (and targets, when given) into the activations' device buffers without waiting.
  void stage_batch(const int32_t* tokens, const int32_t* targets);
  // Forward of the staged tokens up to the final norm (the head runs in head_loss or copy_logits); the
  // MoE layers' balance losses summed into acts' balance. train: accumulate routing counts.
  // With a cache, tokens are the next T positions of the cached sequences; with rows and at too, batch row b
  // is cache row rows[b] starting at position at[b] (decode_rows).
  void run_forward(int B, int T, bool train, KVCache* cache = nullptr, const int* rows = nullptr,
                   const int64_t* at = nullptr);
  double read_balance_loss() const;  // the latest forward's (0 without MoE layers)
  void copy_logits(float* out);  // the head's soft-capped logits (B*T, V) to host
  // The fused head loss into acts' losses; with train, d(lnf) into d_ln and dW into the head's gradient,
  // scaled by the staged grad_per_token_.
  void head_loss(bool train, const Tensor& weights);
  void run_backward(int B, int T);  // gradients scaled by the staged grad_scale_
  // forward_backward's device phase: forward, head loss, loss accumulation and backward of the staged batch
  // (see model.cpp).
  void train_device_phase(int B, int T, bool weighted);
  // Copies per-token losses out (when token_losses is given); returns their sum.
  double sum_losses(int64_t N, float* token_losses);
  int head_index() const;
  int final_norm_index() const;

  ModelConfig cfg_;
  Activation act_;
  Device device_;
  DType dtype_;
  Precision prec_ = Precision::FP32;
  bool cuda_graphs_ = false;
  GraphedStep train_graph_;  // forward_backward's device phase
  int64_t head_chunk_rows_ = 0;  // 0: from kHeadLossChunkBytes
  std::shared_ptr<Layout> layout_, buffer_layout_;
  std::vector<ParamKind> kinds_;
  Arena params_, grads_, buffers_;
  Buffer rope_;                 // cos and sin tables, (seq_len, D/2) each
  Tensor rope_cos_, rope_sin_;
  Buffer rope_rows_;            // decode_rows: each batch row's cos and sin rows gathered, (B*T, D/2) each
  std::unique_ptr<Acts> acts_;
  LossInfo last_;
  // Tokens per expert, (n_moe_layers, E) int64 on the device: accumulating since the last bias update,
  // and those of the last update.
  Buffer counts_;
  Tensor pending_counts_, step_counts_;
  // On the device: the loss sums (2) f64 that take_loss_sums reads, and forward_backward's staged scalars,
  // the loss divisor (1) f64 (accumulate_losses), grad_per_token and grad_scale (1) in the model's dtype.
  Buffer loss_state_;
  Tensor loss_sums_, loss_divisor_, grad_per_token_, grad_scale_;
  bool loss_deferred_ = false;  // sums of deferred calls wait in loss_sums_
  mutable std::mutex compute_mutex_;
};

}  // namespace nw
