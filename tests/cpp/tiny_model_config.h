// The tiny MoE model the CPU model tests share: two layers of width 16 (one dense, one with 4 experts,
// top-2, one shared expert), vocabulary 50, 8 positions.
#pragma once
#include "model/config.h"

inline nw::ModelConfig tiny_moe_config() {
  nw::ModelConfig c;
  c.vocab_size = 50;
  c.d_model = 16;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_kv_head = 1;
  c.head_dim = 8;
  c.n_dense_layers = 1;
  c.dense_hidden = 16;
  c.n_experts = 4;
  c.top_k = 2;
  c.expert_hidden = 8;
  c.n_shared = 1;
  c.shared_hidden = 8;
  c.seq_len = 8;
  return c;
}
