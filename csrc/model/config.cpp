#include "model/config.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/activation.h"

namespace nw {

void ModelConfig::validate() const {
  auto positive = [](int v, const char* name) { NW_CHECK(v > 0, "ModelConfig.", name, " must be > 0, got ", v); };
  positive(vocab_size, "vocab_size");
  positive(seq_len, "seq_len");
  positive(d_model, "d_model");
  positive(n_layer, "n_layer");
  positive(n_head, "n_head");
  positive(n_kv_head, "n_kv_head");
  positive(head_dim, "head_dim");
  // Upper bounds (each far above DeepSeek-V3's) keep every size computed from the config, such as
  // num_params(), inside int64; the memory a config needs is checked by the Model before it allocates.
  auto at_most = [](int v, int max, const char* name) {
    NW_CHECK(v <= max, "ModelConfig.", name, " must be <= ", max, ", got ", v);
  };
  at_most(vocab_size, 1 << 30, "vocab_size");
  at_most(seq_len, 1 << 24, "seq_len");
  at_most(d_model, 1 << 16, "d_model");
  at_most(head_dim, 1 << 16, "head_dim");
  at_most(n_layer, 1 << 12, "n_layer");
  at_most(n_head, 1 << 12, "n_head");
  at_most(n_experts, 1 << 12, "n_experts");
  at_most(n_shared, 1 << 12, "n_shared");
  at_most(dense_hidden, 1 << 18, "dense_hidden");
  at_most(expert_hidden, 1 << 18, "expert_hidden");
  at_most(shared_hidden, 1 << 18, "shared_hidden");
  auto finite = [](double v, const char* name) { NW_CHECK(std::isfinite(v), "ModelConfig.", name, " must be finite, got ", v); };
  finite(rope_base, "rope_base");
  finite(softcap, "softcap");
  finite(route_scale, "route_scale");
  finite(balance_gamma, "balance_gamma");
  finite(balance_alpha, "balance_alpha");
  finite(norm_eps, "norm_eps");
  NW_CHECK(n_head % n_kv_head == 0, "ModelConfig.n_head (", n_head, ") must be divisible by n_kv_head (", n_kv_head, ")");
  NW_CHECK(head_dim % 2 == 0, "ModelConfig.head_dim must be even for RoPE, got ", head_dim);
  NW_CHECK(d_model % n_head == 0, "ModelConfig.d_model (", d_model, ") must be divisible by n_head (", n_head, ")");
  NW_CHECK(n_dense_layers >= 0 && n_dense_layers <= n_layer, "ModelConfig.n_dense_layers must be in [0, n_layer=",
           n_layer, "], got ", n_dense_layers);
  if (n_dense_layers > 0) positive(dense_hidden, "dense_hidden");
  if (n_dense_layers < n_layer) {
    positive(n_experts, "n_experts");
    positive(expert_hidden, "expert_hidden");
    NW_CHECK(top_k >= 1 && top_k <= n_experts, "ModelConfig.top_k must be in [1, n_experts=", n_experts, "], got ", top_k);
    NW_CHECK(n_shared >= 0, "ModelConfig.n_shared must be >= 0, got ", n_shared);
    if (n_shared > 0) positive(shared_hidden, "shared_hidden");
    NW_CHECK(route_scale > 0, "ModelConfig.route_scale must be > 0, got ", route_scale);
    NW_CHECK(balance_gamma >= 0, "ModelConfig.balance_gamma must be >= 0, got ", balance_gamma);
    NW_CHECK(balance_alpha >= 0, "ModelConfig.balance_alpha must be >= 0, got ", balance_alpha);
  }
  NW_CHECK(activation == "relu2" || activation == "swiglu", "ModelConfig.activation must be 'relu2' or 'swiglu', got '",
           activation, "'");
  NW_CHECK(rope_base > 1, "ModelConfig.rope_base must be > 1, got ", rope_base);
  NW_CHECK(softcap >= 0, "ModelConfig.softcap must be >= 0 (0 = off), got ", softcap);
  NW_CHECK(norm_eps > 0, "ModelConfig.norm_eps must be > 0, got ", norm_eps);
  NW_CHECK(!window_pattern.empty() && window_pattern.find_first_not_of("SL") == std::string::npos,
           "ModelConfig.window_pattern must be a non-empty string of 'S' and 'L', got '", window_pattern, "'");
  if (window_pattern.find('S') != std::string::npos) positive(short_window, "short_window");
}

ModelConfig ModelConfig::preset(const std::string& name) {
  ModelConfig c;
  if (name == "tiny") return c;  // the defaults above: ~3M parameters, for CPU and tests
  // The scale ladder (nanowhale/research/ladder.toml): width, depth, experts and context grow together.
  if (name == "small") {  // ~2x tiny's active size; CPU minutes
    c.d_model = 192;
    c.n_layer = 6;
    c.n_head = 6;
    c.n_kv_head = 3;
    c.dense_hidden = 768;
    c.n_experts = 16;
    c.expert_hidden = 192;
    c.shared_hidden = 192;
    return c;
  }
  if (name == "base") {  // between small and nanowhale-100m; a GPU rung
    c.vocab_size = 16384;
    c.seq_len = 512;
    c.d_model = 320;
    c.n_layer = 8;
    c.n_head = 5;
    c.n_kv_head = 5;
    c.head_dim = 64;
    c.dense_hidden = 1024;
    c.n_experts = 24;
    c.top_k = 3;
    c.expert_hidden = 192;
    c.shared_hidden = 192;
    return c;
  }
  if (name == "nanowhale-100m") {
    c.vocab_size = 32768;
    c.seq_len = 2048;
    c.d_model = 512;
    c.n_layer = 8;
    c.n_head = 8;
    c.n_kv_head = 8;
    c.head_dim = 64;
    c.n_dense_layers = 1;
    c.dense_hidden = 1280;
    c.n_experts = 32;
    c.top_k = 4;
    c.expert_hidden = 256;
    c.n_shared = 1;
    c.shared_hidden = 256;
    return c;
  }
  NW_CHECK(false, "unknown preset '", name, "' (known: tiny, small, base, nanowhale-100m)");
  return c;
}

int ModelConfig::window_of_layer(int layer) const {
  return window_pattern[layer % window_pattern.size()] == 'S' ? short_window : 0;
}

namespace {
int64_t mlp_params(const ModelConfig& c, int64_t hidden) {
  return (activation_in_width(parse_activation(c.activation), hidden) + hidden) * c.d_model;
}
int64_t attention_params(const ModelConfig& c) {
  return int64_t(c.d_model) * c.head_dim * (2 * c.n_head + 2 * c.n_kv_head);
}

// Parameters of layer l when `experts` routed experts are counted (all of them, or top_k for "active").
int64_t layer_params(const ModelConfig& c, int l, int experts) {
  int64_t n = attention_params(c) + 2 * c.d_model;  // attention and the two norm gains
  if (!c.is_moe_layer(l)) return n + mlp_params(c, c.dense_hidden);
  return n + int64_t(c.n_experts) * c.d_model + experts * mlp_params(c, c.expert_hidden) +
         c.n_shared * mlp_params(c, c.shared_hidden);
}
}  // namespace

int64_t ModelConfig::num_params() const {
  int64_t n = int64_t(vocab_size) * d_model * (tie_embeddings ? 1 : 2) + d_model;  // embed, head, final norm
  for (int l = 0; l < n_layer; ++l) n += layer_params(*this, l, n_experts);
  return n;
}

int64_t ModelConfig::num_active_params() const {
  int64_t n = int64_t(vocab_size) * d_model + d_model;  // head (tied or not) and final norm
  for (int l = 0; l < n_layer; ++l) n += layer_params(*this, l, top_k);
  return n;
}

double ModelConfig::flops_per_token() const {
  double attn = 0;
  for (int l = 0; l < n_layer; ++l) {
    const int w = window_of_layer(l);
    const double ctx = w > 0 ? std::min(w, seq_len) : seq_len / 2.0;  // mean keys seen per query
    attn += 12.0 * n_head * head_dim * ctx;
  }
  return 6.0 * double(num_active_params()) + attn;
}

}  // namespace nw
