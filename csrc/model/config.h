// The model's hyperparameters (DESIGN.md §3), their validation, presets and parameter counts.
#pragma once
#include <cstdint>
#include <string>

namespace nw {

struct ModelConfig {
  int vocab_size = 8192;
  int seq_len = 256;
  int d_model = 128;
  int n_layer = 4;
  int n_head = 4;
  int n_kv_head = 2;
  int head_dim = 32;
  int n_dense_layers = 1;   // the first layers use a dense MLP, the rest are MoE
  int dense_hidden = 512;
  int n_experts = 8;
  int top_k = 2;
  int expert_hidden = 128;
  int n_shared = 1;         // shared experts, always on
  int shared_hidden = 128;
  std::string activation = "relu2";  // "relu2" or "swiglu"
  double rope_base = 10000.0;
  float softcap = 15.0f;    // 0 disables
  bool tie_embeddings = false;
  std::string window_pattern = "L";  // per layer, repeated: 'L' full causal, 'S' sliding window
  int short_window = 128;   // window of 'S' layers
  float route_scale = 1.0f;
  float balance_gamma = 1e-3f;  // bias update speed of aux-loss-free balancing
  float balance_alpha = 1e-4f;  // weight of the sequence-wise balance loss
  float norm_eps = 1e-6f;

  // Throws ValueError naming the first offending field.
  void validate() const;
  static ModelConfig preset(const std::string& name);

  bool is_moe_layer(int layer) const { return layer >= n_dense_layers; }
  int window_of_layer(int layer) const;  // 0 = full causal
  int64_t num_params() const;
  // Parameters touched per token (routed experts counted top_k times out of n_experts); the input
  // embedding is a lookup and is not counted, the LM head is.
  int64_t num_active_params() const;
  // Training FLOPs per token: 6 * active params + attention (12 * layers * head_dim * heads * seq/2).
  double flops_per_token() const;
};

}  // namespace nw
