// Forward and backward of the nanowhale MoE transformer, composed from ops (DESIGN.md §3):
//   x = embed(tokens)
//   per layer: x = x + attn(norm(x)); x = x + ffn(norm(x))   (ffn: dense MLP or MoE + shared experts)
//   loss = CE(softcap(head(norm(x))), targets) (+ balance loss of every MoE layer)
#include "model/model.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/rng.h"
#include "model/generation.h"
#include "ops/accumulate_losses.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/grouped_linear.h"
#include "ops/head_loss.h"
#include "ops/linear.h"
#include "ops/moe_dispatch.h"
#include "ops/moe_router.h"
#include "ops/residual.h"
#include "ops/residual_rmsnorm.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"

namespace nw {

namespace {
std::string layer_name(int l, const char* what) { return "layers." + std::to_string(l) + "." + what; }

// Carves tensors out of one block. Run once with base == nullptr to size the block, then for real.
struct BumpAllocator {
  char* base = nullptr;
  size_t used = 0;
  Device device;
  Tensor make(DType dtype, std::initializer_list<int64_t> dims) {
    Tensor t(base ? base + used : nullptr, dtype, device, dims);
    used += (t.nbytes() + 63) / 64 * 64;
    return t;
  }
};
}  // namespace

// Parameter indices of one layer (-1 where the layer has no such tensor).
struct LayerParams {
  int attn_norm, wq, wk, wv, wo, mlp_norm;
  int w_in = -1, w_out = -1;                // dense MLP
  int router = -1, expert_in = -1, expert_out = -1, shared_in = -1, shared_out = -1, bias = -1;
  int moe_index = -1;                       // position among MoE layers
};

// Activations of one batch shape. Shapes: N = B*T tokens, K = top_k, E = n_experts.
struct LayerActs {
  Tensor resid_in, mid;              // (N, C): input of the layer and after the attention residual
  Tensor ln1, ln1_rstd;              // (N, C), (N)
  Tensor q_raw, k_raw, v;            // (N, H*D), (N, KVH*D), (N, KVH*D)
  Tensor q, k, q_rstd, k_rstd;       // after QK-norm + RoPE: (B, T, H, D), (B, T, KVH, D); (N*H), (N*KVH)
  Tensor att, lse;                   // (B, T, H, D), (B, H, T)
  Tensor ln2, ln2_rstd;              // (N, C), (N)
  Tensor pre, h;                     // dense: (N, Hin), (N, H)
  Tensor router_logits, scores;      // (N, E)
  Tensor topk, gates;                // (N, K) i32, (N, K)
  Tensor counts, offsets;            // (E), (E+1) i32
  Tensor row_of_slot, token_of_row;  // (N*K) i32
  Tensor xe, pre_e, h_e, ye;         // (N*K, C), (N*K, Hin), (N*K, H), (N*K, C)
  Tensor pre_s, h_s;                 // (S, N, Hin), (S, N, H)
};

struct Model::Acts {
  int B = 0, T = 0;
  Buffer block;
  std::vector<LayerActs> layers;
  std::vector<LayerParams> params;
  Tensor tokens, targets;            // (N) i32 on the device
  Tensor final_in, lnf, lnf_rstd;    // (N, C), (N, C), (N)
  // logits: (N, V) where the caller gets the logits back, else (R, V), one chunk of rows of the fused head
  // loss (ops/head_loss.h; the chunk's dlogits in place); losses (N); weights (N) per-token loss weights.
  Tensor logits, losses, weights;
  int64_t logit_rows = 0;            // logits.size(0) of the planned shape
  size_t bytes = 0;                  // planned size of the block for this shape
  Tensor balance;                    // (1) f64: the MoE layers' balance losses, summed on the device
  // backward scratch
  Tensor d_resid, d_tmp, d_ln, d_tmp2;  // (N, C)
  Tensor d_att, d_q, d_k, d_v, d_q_raw, d_k_raw;
  Tensor d_pre, d_h, d_out;          // largest MLP widths; d_out (N, C)
  Tensor d_xe, d_ye, d_gates, d_router;
};

namespace {
// Fails before any allocation when the weights and gradients alone exceed the machine's memory, saying how
// much the config needs (a mistyped width or depth would otherwise swap, or end in MemoryError much later).
void check_fits_in_host_memory(const ModelConfig& c, int64_t bytes_per_value) {
  const double gib = double(int64_t{1} << 30), params = double(c.num_params());
  const double need = 2 * params * bytes_per_value;  // weights + gradients
  const double have = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGE_SIZE));
  NW_CHECK(have <= 0 || need <= have, "this ModelConfig has ", c.num_params(), " parameters: its weights and gradients "
           "need ", need / gib, " GiB (training adds ", need / gib, " GiB of optimizer state), more than this machine's ",
           have / gib, " GiB of memory");
}
}  // namespace

Model::Model(const ModelConfig& cfg, uint64_t seed, Device device, DType dtype)
    : cfg_(cfg), device_(device), dtype_(dtype) {
  cfg_.validate();
  NW_CHECK(dtype == DType::F32 || dtype == DType::F64, "Model dtype must be float32 or float64, got ", dtype_name(dtype));
  NW_CHECK(device == Device::CPU || dtype == DType::F32, "float64 models are CPU only (they exist for gradient checks)");
  if (device == Device::CPU) check_fits_in_host_memory(cfg_, dtype_size(dtype));
  act_ = parse_activation(cfg_.activation);
  const int64_t C = cfg_.d_model, D = cfg_.head_dim, V = cfg_.vocab_size;
  layout_ = std::make_shared<Layout>();
  buffer_layout_ = std::make_shared<Layout>();
  auto add = [&](const std::string& name, std::vector<int64_t> shape, ParamKind kind) {
    kinds_.push_back(kind);
    return layout_->add(name, std::move(shape));
  };
  acts_ = std::make_unique<Acts>();
  add("embed", {V, C}, ParamKind::Embedding);
  int moe_index = 0;
  for (int l = 0; l < cfg_.n_layer; ++l) {
    LayerParams p;
    p.attn_norm = add(layer_name(l, "attn_norm"), {C}, ParamKind::Scalar);
    p.wq = add(layer_name(l, "attn.wq"), {cfg_.n_head * D, C}, ParamKind::Matrix);
    p.wk = add(layer_name(l, "attn.wk"), {cfg_.n_kv_head * D, C}, ParamKind::Matrix);
    p.wv = add(layer_name(l, "attn.wv"), {cfg_.n_kv_head * D, C}, ParamKind::Matrix);
    p.wo = add(layer_name(l, "attn.wo"), {C, cfg_.n_head * D}, ParamKind::Matrix);
    p.mlp_norm = add(layer_name(l, "mlp_norm"), {C}, ParamKind::Scalar);
    if (cfg_.is_moe_layer(l)) {
      const int64_t E = cfg_.n_experts, H = cfg_.expert_hidden, S = cfg_.n_shared, Hs = cfg_.shared_hidden;
      p.router = add(layer_name(l, "moe.router"), {E, C}, ParamKind::Router);
      p.expert_in = add(layer_name(l, "moe.experts.w_in"), {E, activation_in_width(act_, H), C}, ParamKind::Matrix);
      p.expert_out = add(layer_name(l, "moe.experts.w_out"), {E, C, H}, ParamKind::Matrix);
      if (S > 0) {
        p.shared_in = add(layer_name(l, "moe.shared.w_in"), {S, activation_in_width(act_, Hs), C}, ParamKind::Matrix);
        p.shared_out = add(layer_name(l, "moe.shared.w_out"), {S, C, Hs}, ParamKind::Matrix);
      }
      p.bias = buffer_layout_->add(layer_name(l, "moe.bias"), {E});
      p.moe_index = moe_index++;
    } else {
      const int64_t H = cfg_.dense_hidden;
      p.w_in = add(layer_name(l, "mlp.w_in"), {activation_in_width(act_, H), C}, ParamKind::Matrix);
      p.w_out = add(layer_name(l, "mlp.w_out"), {C, H}, ParamKind::Matrix);
    }
    acts_->params.push_back(p);
  }
  add("final_norm", {C}, ParamKind::Scalar);
  if (!cfg_.tie_embeddings) add("head", {V, C}, ParamKind::Head);
  params_ = Arena(layout_, dtype_, device_);
  grads_ = Arena(layout_, dtype_, device_);
  buffers_ = Arena(buffer_layout_, dtype_, device_);
  const int64_t half = cfg_.head_dim / 2, rope_numel = int64_t(cfg_.seq_len) * half;
  rope_ = Buffer(2 * rope_numel * dtype_size(dtype_), device_);
  rope_cos_ = Tensor(rope_.data(), dtype_, device_, {cfg_.seq_len, half});
  rope_sin_ = Tensor(static_cast<char*>(rope_.data()) + rope_numel * dtype_size(dtype_), dtype_, device_, {cfg_.seq_len, half});
  rope_tables(rope_cos_, rope_sin_, cfg_.rope_base);
  const int64_t counts_numel = int64_t(moe_index) * cfg_.n_experts;
  counts_ = Buffer(2 * counts_numel * sizeof(int64_t), device_);
  pending_counts_ = Tensor(counts_.data(), DType::I64, device_, {moe_index, cfg_.n_experts});
  step_counts_ = Tensor(static_cast<int64_t*>(counts_.data()) + counts_numel, DType::I64, device_,
                        {moe_index, cfg_.n_experts});
  loss_state_ = Buffer(5 * sizeof(double), device_);  // zeroed; each scalar in an 8-byte slot
  double* slots = static_cast<double*>(loss_state_.data());
  loss_sums_ = Tensor(slots, DType::F64, device_, {2});
  loss_divisor_ = Tensor(slots + 2, DType::F64, device_, {1});
  grad_per_token_ = Tensor(slots + 3, dtype_, device_, {1});
  grad_scale_ = Tensor(slots + 4, dtype_, device_, {1});
  init_weights(seed);
}

Model::~Model() = default;

void Model::set_precision(Precision p) {
  NW_CHECK(p == Precision::FP32 || dtype_ == DType::F32, "precision bf16 needs a float32 model, this one is ",
           dtype_name(dtype_));
  prec_ = p;
}

void Model::set_cuda_graphs(bool on) {
  cuda_graphs_ = on;
  train_graph_.set_enabled(on);
}

void Model::init_weights(uint64_t seed) {
  const double C = cfg_.d_model;
  for (int i = 0; i < layout_->size(); ++i) {
    const LayoutEntry& e = (*layout_)[i];
    const bool is_output = e.name.find("wo") != std::string::npos || e.name.find("w_out") != std::string::npos;
    double std = 0;  // zero-initialised output projections
    switch (kinds_[i]) {
      case ParamKind::Embedding: std = cfg_.tie_embeddings ? 1.0 / std::sqrt(C) : 1.0; break;
      case ParamKind::Head: std = 1.0 / std::sqrt(C); break;
      case ParamKind::Router: std = 1.0 / std::sqrt(C); break;
      case ParamKind::Scalar: std = -1; break;  // norm gains start at 1
      case ParamKind::Matrix: std = is_output ? 0.0 : 1.0 / std::sqrt(double(e.shape.back())); break;
    }
    std::vector<double> host(e.numel);
    const uint64_t stream = stream_of(e.name);
    for (int64_t j = 0; j < e.numel; ++j) host[j] = std < 0 ? 1.0 : std == 0 ? 0.0 : std * rng_normal(seed, stream, j);
    const Tensor view = params_.view(i);
    if (dtype_ == DType::F64) {
      copy_from_host(view, host.data());
    } else {
      std::vector<float> f(host.begin(), host.end());
      copy_from_host(view, f.data());
    }
  }
  buffers_.zero();
}

void Model::check_batch(const int32_t* tokens, const int32_t* targets, int B, int T) const {
  NW_CHECK(B >= 1 && T >= 1, "batch must be (B, T) with B, T >= 1, got (", B, ", ", T, ")");
  NW_CHECK(T <= cfg_.seq_len, "sequence length ", T, " exceeds the model's seq_len ", cfg_.seq_len);
  const int64_t N = int64_t(B) * T;
  for (int64_t i = 0; i < N; ++i)
    NW_CHECK(tokens[i] >= 0 && tokens[i] < cfg_.vocab_size, "token id ", tokens[i], " at position ", i,
             " is outside [0, vocab_size=", cfg_.vocab_size, ")");
  if (targets)
    for (int64_t i = 0; i < N; ++i)
      NW_CHECK(targets[i] >= -1 && targets[i] < cfg_.vocab_size, "target id ", targets[i], " at position ", i,
               " is outside [-1, vocab_size=", cfg_.vocab_size, ") (-1 marks an ignored position)");
}

void Model::prepare(int B, int T, bool full_logits) {
  Acts& a = *acts_;
  const int64_t N = int64_t(B) * T, V = cfg_.vocab_size;
  const int64_t logit_rows = full_logits ? N
                             : head_chunk_rows_ > 0 ? std::min(N, head_chunk_rows_)
                                                    : head_loss_chunk_rows(N, V, dtype_);
  if (a.B == B && a.T == T && a.logit_rows == logit_rows) return;
  const int64_t C = cfg_.d_model, D = cfg_.head_dim, H = cfg_.n_head, KVH = cfg_.n_kv_head;
  const int64_t E = cfg_.n_experts, K = cfg_.top_k, S = cfg_.n_shared;
  const int64_t He = cfg_.expert_hidden, Hs = cfg_.shared_hidden, Hd = cfg_.dense_hidden;
  const DType F = dtype_, I = DType::I32;
  auto plan = [&](BumpAllocator& m) {
    a.layers.assign(cfg_.n_layer, LayerActs{});
    int64_t max_pre = 0, max_h = 0;
    for (int l = 0; l < cfg_.n_layer; ++l) {
      LayerActs& x = a.layers[l];
      x.resid_in = m.make(F, {N, C});
      x.mid = m.make(F, {N, C});
      x.ln1 = m.make(F, {N, C});
      x.ln1_rstd = m.make(F, {N});
      x.q_raw = m.make(F, {N, H * D});
      x.k_raw = m.make(F, {N, KVH * D});
      x.v = m.make(F, {B, T, KVH, D});
      x.q = m.make(F, {B, T, H, D});
      x.k = m.make(F, {B, T, KVH, D});
      x.q_rstd = m.make(F, {N * H});
      x.k_rstd = m.make(F, {N * KVH});
      x.att = m.make(F, {B, T, H, D});
      x.lse = m.make(F, {B, H, T});
      x.ln2 = m.make(F, {N, C});
      x.ln2_rstd = m.make(F, {N});
      if (cfg_.is_moe_layer(l)) {
        x.router_logits = m.make(F, {N, E});
        x.scores = m.make(F, {N, E});
        x.topk = m.make(I, {N, K});
        x.gates = m.make(F, {N, K});
        x.counts = m.make(I, {E});
        x.offsets = m.make(I, {E + 1});
        x.row_of_slot = m.make(I, {N * K});
        x.token_of_row = m.make(I, {N * K});
        x.xe = m.make(F, {N * K, C});
        x.pre_e = m.make(F, {N * K, activation_in_width(act_, He)});
        x.h_e = m.make(F, {N * K, He});
        x.ye = m.make(F, {N * K, C});
        if (S > 0) {
          x.pre_s = m.make(F, {S, N, activation_in_width(act_, Hs)});
          x.h_s = m.make(F, {S, N, Hs});
        }
        max_pre = std::max({max_pre, N * K * activation_in_width(act_, He), N * activation_in_width(act_, Hs)});
        max_h = std::max({max_h, N * K * He, N * Hs});
      } else {
        x.pre = m.make(F, {N, activation_in_width(act_, Hd)});
        x.h = m.make(F, {N, Hd});
        max_pre = std::max(max_pre, N * activation_in_width(act_, Hd));
        max_h = std::max(max_h, N * Hd);
      }
    }
    a.tokens = m.make(I, {N});
    a.targets = m.make(I, {N});
    a.final_in = m.make(F, {N, C});
    a.lnf = m.make(F, {N, C});
    a.lnf_rstd = m.make(F, {N});
    a.logits = m.make(F, {logit_rows, V});
    a.losses = m.make(F, {N});
    a.weights = m.make(F, {N});
    a.balance = m.make(DType::F64, {1});
    a.d_resid = m.make(F, {N, C});
    a.d_tmp = m.make(F, {N, C});
    a.d_tmp2 = m.make(F, {N, C});
    a.d_ln = m.make(F, {N, C});
    a.d_out = m.make(F, {N, C});
    a.d_att = m.make(F, {B, T, H, D});
    a.d_q = m.make(F, {B, T, H, D});
    a.d_k = m.make(F, {B, T, KVH, D});
    a.d_v = m.make(F, {B, T, KVH, D});
    a.d_q_raw = m.make(F, {N, H * D});
    a.d_k_raw = m.make(F, {N, KVH * D});
    a.d_pre = m.make(F, {max_pre});
    a.d_h = m.make(F, {max_h});
    if (cfg_.n_dense_layers < cfg_.n_layer) {
      a.d_xe = m.make(F, {N * K, C});
      a.d_ye = m.make(F, {N * K, C});
      a.d_gates = m.make(F, {N, K});
      a.d_router = m.make(F, {N, E});
    }
  };
  BumpAllocator sizing{nullptr, 0, device_};
  plan(sizing);
  // A block large enough is kept: evaluation and generation change the shape from call to call (batches of
  // varying length; a prompt, then one token at a time, interleaved across streams), and a fresh zeroed
  // block each time cost more than the forward pass itself.
  if (a.block.nbytes() < sizing.used) {
    a.block = Buffer();  // free the old block first: peak memory is one block
    a.block = Buffer(sizing.used, device_);
  }
  BumpAllocator real{static_cast<char*>(a.block.data()), 0, device_};
  plan(real);
  a.B = B;
  a.T = T;
  a.logit_rows = logit_rows;
  a.bytes = sizing.used;
}

size_t Model::activation_bytes() const { return acts_->bytes; }

void Model::set_head_chunk_rows(int64_t rows) {
  NW_CHECK(rows >= 0, "head chunk rows must be >= 0 (0: from the memory budget), got ", rows);
  head_chunk_rows_ = rows;
}

namespace {
// A float scalar into a (1) tensor of the model's dtype.
void stage_scalar(const Tensor& dst, float value) {
  const double wide = value;
  stage_from_host(dst, dst.dtype == DType::F64 ? static_cast<const void*>(&wide) : &value);
}
}  // namespace

void Model::stage_batch(const int32_t* tokens, const int32_t* targets) {
  stage_from_host(acts_->tokens, tokens);
  if (targets) stage_from_host(acts_->targets, targets);
}

// Runs the forward pass of the staged tokens up to the final norm (a.lnf).
void Model::run_forward(int B, int T, bool train, KVCache* cache, const int* rows, const int64_t* at) {
  Acts& a = *acts_;
  const int64_t pos = cache ? cache->length() : 0;  // position of the first token (rows at one position)
  Tensor cos = rope_cos_.slice_rows(pos, pos + T), sin = rope_sin_.slice_rows(pos, pos + T);
  const int64_t N = int64_t(B) * T, C = cfg_.d_model, D = cfg_.head_dim, H = cfg_.n_head, KVH = cfg_.n_kv_head;
  if (rows) {  // rows at their own positions: gather each row's angles, (N, D/2), for one rotation of all N
    const int64_t half = rope_cos_.size(1), bytes = 2 * N * half * int64_t(dtype_size(dtype_));
    if (int64_t(rope_rows_.nbytes()) < bytes) rope_rows_ = Buffer(size_t(bytes), device_);
    cos = Tensor(rope_rows_.data(), dtype_, device_, {N, half});
    sin = Tensor(static_cast<char*>(rope_rows_.data()) + bytes / 2, dtype_, device_, {N, half});
    for (int b = 0; b < B; ++b) {
      copy_tensor(cos.slice_rows(int64_t(b) * T, int64_t(b + 1) * T), rope_cos_.slice_rows(at[b], at[b] + T));
      copy_tensor(sin.slice_rows(int64_t(b) * T, int64_t(b + 1) * T), rope_sin_.slice_rows(at[b], at[b] + T));
    }
  }
  auto P = [&](int i) { return params_.view(i); };
  embedding_forward(a.layers[0].resid_in, P(0), a.tokens);
  const bool has_moe = cfg_.n_dense_layers < cfg_.n_layer;
  if (has_moe) zero_tensor(a.balance);
  for (int l = 0; l < cfg_.n_layer; ++l) {
    LayerActs& x = a.layers[l];
    const LayerParams& p = a.params[l];
    // attention (layers after the first get ln1 from the previous layer's residual_rmsnorm_forward)
    if (l == 0) rmsnorm_forward(x.ln1, x.ln1_rstd, x.resid_in, P(p.attn_norm), cfg_.norm_eps);
    linear_forward(x.q_raw, x.ln1, P(p.wq), prec_);
    linear_forward(x.k_raw, x.ln1, P(p.wk), prec_);
    linear_forward(x.v.view({N, KVH * D}), x.ln1, P(p.wv), prec_);
    rmsnorm_forward(x.q.view({N * H, D}), x.q_rstd, x.q_raw.view({N * H, D}), Tensor(), cfg_.norm_eps);
    rmsnorm_forward(x.k.view({N * KVH, D}), x.k_rstd, x.k_raw.view({N * KVH, D}), Tensor(), cfg_.norm_eps);
    if (rows) {  // each row at its own position, in its own cache row: rotate all, append and attend row by row
      rope_forward(x.q.view({1, N, H, D}), cos, sin);
      rope_forward(x.k.view({1, N, KVH, D}), cos, sin);
      const Tensor &ck = cache->keys(l), &cv = cache->values(l);
      const int64_t cap = cache->capacity(), row = KVH * D;
      for (int b = 0; b < B; ++b) {
        const int64_t p0 = at[b];
        const Tensor q = x.q.slice_rows(b, b + 1), k = x.k.slice_rows(b, b + 1);
        const Tensor kr = ck.slice_rows(rows[b], rows[b] + 1), vr = cv.slice_rows(rows[b], rows[b] + 1);
        copy_tensor(kr.view({cap, row}).slice_rows(p0, p0 + T), k.view({T, row}));
        copy_tensor(vr.view({cap, row}).slice_rows(p0, p0 + T), x.v.slice_rows(b, b + 1).view({T, row}));
        attention_forward_kv(x.att.slice_rows(b, b + 1), q, kr, vr, p0 + T, cfg_.window_of_layer(l), prec_);
      }
    } else if (cache) {  // append this step's keys/values, then attend over the whole cache
      rope_forward(x.q, cos, sin);
      rope_forward(x.k, cos, sin);
      const Tensor &ck = cache->keys(l), &cv = cache->values(l);
      const int64_t cap = cache->capacity(), row = KVH * D;
      for (int b = 0; b < B; ++b) {
        copy_tensor(ck.slice_rows(b, b + 1).view({cap, row}).slice_rows(pos, pos + T), x.k.slice_rows(b, b + 1).view({T, row}));
        copy_tensor(cv.slice_rows(b, b + 1).view({cap, row}).slice_rows(pos, pos + T), x.v.slice_rows(b, b + 1).view({T, row}));
      }
      attention_forward_kv(x.att, x.q, ck, cv, pos + T, cfg_.window_of_layer(l), prec_);
    } else {
      rope_forward(x.q, cos, sin);
      rope_forward(x.k, cos, sin);
      attention_forward(x.att, x.lse, x.q, x.k, x.v, cfg_.window_of_layer(l), prec_);
    }
    linear_forward(x.mid, x.att.view({N, H * D}), P(p.wo), prec_);
    residual_rmsnorm_forward(x.ln2, x.ln2_rstd, x.mid, x.resid_in, P(p.mlp_norm), cfg_.norm_eps);
    // feed-forward
    const bool last = l + 1 == cfg_.n_layer;
    const Tensor out = last ? a.final_in : a.layers[l + 1].resid_in;
    if (p.moe_index < 0) {
      linear_forward(x.pre, x.ln2, P(p.w_in), prec_);
      activation_forward(act_, x.h, x.pre);
      linear_forward(out, x.h, P(p.w_out), prec_);
    } else {
      linear_forward(x.router_logits, x.ln2, P(p.router));  // the router stays fp32 in every precision
      moe_route(x.scores, x.topk, x.gates, x.counts, x.offsets, x.row_of_slot, x.token_of_row, a.balance,
                x.router_logits, buffers_.view(p.bias), B, cfg_.route_scale, cfg_.balance_alpha);
      if (train)
        moe_accumulate_counts(pending_counts_.slice_rows(p.moe_index, p.moe_index + 1).view({cfg_.n_experts}), x.counts);
      moe_gather(x.xe, x.ln2, x.token_of_row);
      grouped_linear_forward(x.pre_e, x.xe, P(p.expert_in), x.offsets, prec_);
      activation_forward(act_, x.h_e, x.pre_e);
      grouped_linear_forward(x.ye, x.h_e, P(p.expert_out), x.offsets, prec_);
      moe_combine(out, x.ye, x.gates, x.row_of_slot);
      for (int s = 0; s < cfg_.n_shared; ++s) {
        const Tensor w_in = P(p.shared_in), w_out = P(p.shared_out);
        const Tensor pre = x.pre_s.slice_rows(s, s + 1).view({N, x.pre_s.size(2)});
        const Tensor h = x.h_s.slice_rows(s, s + 1).view({N, x.h_s.size(2)});
        linear_forward(pre, x.ln2, w_in.slice_rows(s, s + 1).view({w_in.size(1), C}), prec_);
        activation_forward(act_, h, pre);
        linear_forward(a.d_tmp, h, w_out.slice_rows(s, s + 1).view({C, w_out.size(2)}), prec_);
        residual_add(out, a.d_tmp);
      }
    }
    // the feed-forward residual, fused with the next layer's attention norm (or the final norm)
    if (last) {
      residual_rmsnorm_forward(a.lnf, a.lnf_rstd, out, x.mid, P(final_norm_index()), cfg_.norm_eps);
    } else {
      LayerActs& next = a.layers[l + 1];
      residual_rmsnorm_forward(next.ln1, next.ln1_rstd, out, x.mid, P(a.params[l + 1].attn_norm), cfg_.norm_eps);
    }
  }
}

double Model::read_balance_loss() const {
  double balance = 0;
  if (cfg_.n_dense_layers < cfg_.n_layer) copy_to_host(&balance, acts_->balance);
  return balance;
}

void Model::run_backward(int B, int T) {
  Acts& a = *acts_;
  const int64_t N = int64_t(B) * T, C = cfg_.d_model, D = cfg_.head_dim, H = cfg_.n_head, KVH = cfg_.n_kv_head;
  const int64_t K = cfg_.top_k;
  auto P = [&](int i) { return params_.view(i); };
  auto G = [&](int i) { return grads_.view(i); };
  // d_ln holds d(lnf) and the head's gradient is accumulated (head_loss).
  rmsnorm_backward(a.d_resid, G(final_norm_index()), a.d_ln, a.final_in, P(final_norm_index()), a.lnf_rstd);
  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    const LayerActs& x = a.layers[l];
    const LayerParams& p = a.params[l];
    // feed-forward: d_resid holds d(layer output); d_ln collects d(ln2)
    if (p.moe_index < 0) {
      const int64_t Hd = cfg_.dense_hidden, Hin = x.pre.size(1);
      const Tensor dh = a.d_h.first({N, Hd}), dpre = a.d_pre.first({N, Hin});
      linear_backward(dh, G(p.w_out), a.d_resid, x.h, P(p.w_out), prec_);
      activation_backward(act_, dpre, dh, x.pre);
      linear_backward(a.d_ln, G(p.w_in), dpre, x.ln2, P(p.w_in), prec_);
    } else {
      zero_tensor(a.d_ln);
      for (int s = 0; s < cfg_.n_shared; ++s) {
        const int64_t Hs = cfg_.shared_hidden, Hin = x.pre_s.size(2);
        const Tensor dh = a.d_h.first({N, Hs}), dpre = a.d_pre.first({N, Hin});
        const Tensor h = x.h_s.slice_rows(s, s + 1).view({N, Hs});
        const Tensor pre = x.pre_s.slice_rows(s, s + 1).view({N, Hin});
        const Tensor w_out = P(p.shared_out).slice_rows(s, s + 1).view({C, Hs});
        const Tensor w_in = P(p.shared_in).slice_rows(s, s + 1).view({Hin, C});
        linear_backward(dh, G(p.shared_out).slice_rows(s, s + 1).view({C, Hs}), a.d_resid, h, w_out,
                        prec_);
        activation_backward(act_, dpre, dh, pre);
        linear_backward(a.d_tmp, G(p.shared_in).slice_rows(s, s + 1).view({Hin, C}), dpre, x.ln2, w_in,
                        prec_);
        residual_add(a.d_ln, a.d_tmp);
      }
      const int64_t He = cfg_.expert_hidden, Hin = x.pre_e.size(1);
      const Tensor dh = a.d_h.first({N * K, He}), dpre = a.d_pre.first({N * K, Hin});
      moe_combine_backward(a.d_ye, a.d_gates, a.d_resid, x.ye, x.gates, x.row_of_slot);
      grouped_linear_backward(dh, G(p.expert_out), a.d_ye, x.h_e, P(p.expert_out), x.offsets, prec_);
      activation_backward(act_, dpre, dh, x.pre_e);
      grouped_linear_backward(a.d_xe, G(p.expert_in), dpre, x.xe, P(p.expert_in), x.offsets, prec_);
      moe_gather_backward(a.d_ln, a.d_xe, x.row_of_slot);
      moe_router_backward(a.d_router, a.d_gates, x.scores, x.topk, B, cfg_.route_scale, cfg_.balance_alpha,
                          grad_scale_);
      linear_backward(a.d_tmp, G(p.router), a.d_router, x.ln2, P(p.router));  // fp32, as its forward
      residual_add(a.d_ln, a.d_tmp);
    }
    residual_rmsnorm_backward(a.d_resid, G(p.mlp_norm), a.d_ln, x.mid, P(p.mlp_norm), x.ln2_rstd);  // now d(mid)
    // attention: mid = resid_in + wo(att)
    linear_backward(a.d_att.view({N, H * D}), G(p.wo), a.d_resid, x.att.view({N, H * D}), P(p.wo), prec_);
    attention_backward(a.d_q, a.d_k, a.d_v, a.d_att, x.q, x.k, x.v, x.att, x.lse, cfg_.window_of_layer(l),
                       prec_);
    rope_backward(a.d_q, rope_cos_, rope_sin_);
    rope_backward(a.d_k, rope_cos_, rope_sin_);
    rmsnorm_backward(a.d_q_raw.view({N * H, D}), Tensor(), a.d_q.view({N * H, D}), x.q_raw.view({N * H, D}),
                     Tensor(), x.q_rstd);
    rmsnorm_backward(a.d_k_raw.view({N * KVH, D}), Tensor(), a.d_k.view({N * KVH, D}),
                     x.k_raw.view({N * KVH, D}), Tensor(), x.k_rstd);
    linear_backward(a.d_ln, G(p.wq), a.d_q_raw, x.ln1, P(p.wq), prec_);
    linear_backward(a.d_tmp, G(p.wk), a.d_k_raw, x.ln1, P(p.wk), prec_);
    residual_add(a.d_ln, a.d_tmp);
    linear_backward(a.d_tmp, G(p.wv), a.d_v.view({N, KVH * D}), x.ln1, P(p.wv), prec_);
    residual_add(a.d_ln, a.d_tmp);
    // now d(resid_in)
    residual_rmsnorm_backward(a.d_resid, G(p.attn_norm), a.d_ln, x.resid_in, P(p.attn_norm), x.ln1_rstd);
  }
  embedding_backward(G(0), a.d_resid, a.tokens);
}

int Model::head_index() const { return cfg_.tie_embeddings ? 0 : layout_->index("head"); }
int Model::final_norm_index() const { return layout_->index("final_norm"); }

namespace {
int64_t count_targets(const int32_t* targets, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += targets[i] >= 0;
  return c;
}
}  // namespace

double Model::sum_losses(int64_t N, float* token_losses) {
  std::vector<float> host;
  float* dst = token_losses;
  if (!dst) {
    host.resize(N);
    dst = host.data();
  }
  Tensor losses = acts_->losses;
  if (dtype_ == DType::F64) {
    std::vector<double> d(N);
    copy_to_host(d.data(), losses);
    for (int64_t i = 0; i < N; ++i) dst[i] = static_cast<float>(d[i]);
    double s = 0;
    for (int64_t i = 0; i < N; ++i) s += d[i];
    return s;
  }
  copy_to_host(dst, losses);
  double s = 0;
  for (int64_t i = 0; i < N; ++i) s += dst[i];  // token order: deterministic
  return s;
}

// Three phases: the host checks the arguments and counts the targets; the batch and the call's scalars are
// staged into the model's device buffers without waiting for the device; the device phase runs the step
// from those buffers alone. The loss is read back only when not deferred.
LossInfo Model::forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T, float grad_scale,
                                 const float* weights, bool defer_loss) {
  NW_CHECK(targets, "forward_backward needs targets");
  NW_CHECK(std::isfinite(grad_scale), "grad_scale must be finite, got ", grad_scale);
  NW_CHECK(defer_loss || !loss_deferred_, "forward_backward: the sums of deferred losses are waiting; read them "
           "with take_loss_sums() before a call that returns its loss");
  check_batch(tokens, targets, B, T);
  const int64_t N = int64_t(B) * T;
  if (weights)
    for (int64_t i = 0; i < N; ++i)
      NW_CHECK(std::isfinite(weights[i]), "loss weight ", weights[i], " at position ", i, " is not finite");
  LossInfo info;
  info.n_targets = count_targets(targets, N);

  prepare(B, T, /*full_logits=*/false);
  stage_batch(tokens, targets);
  // Unweighted, the loss is the mean: each target's gradient is grad_scale / #targets and the loss sum is
  // divided by #targets. Weighted, the weights carry the scale: grad_scale per token, divisor 1.
  float grad_per_token = info.n_targets ? grad_scale / float(info.n_targets) : 0.0f;
  double divisor = double(info.n_targets);
  if (weights) {
    if (dtype_ == DType::F64) stage_from_host(acts_->weights, std::vector<double>(weights, weights + N).data());
    else stage_from_host(acts_->weights, weights);
    grad_per_token = grad_scale;
    divisor = 1;
  }
  stage_scalar(grad_per_token_, grad_per_token);
  stage_scalar(grad_scale_, grad_scale);
  stage_from_host(loss_divisor_, &divisor);

  // The device phase, eager or replayed as a CUDA graph (train_graph_ opens the step workspace). Its launches
  // depend on the shapes, the activations' addresses (the block and prepare()'s plan for B, T and the
  // logits chunk), the precision and the weighting; every per-call value is staged above.
  const GraphedStep::Key key{uint64_t(B), uint64_t(T), uint64_t(acts_->logit_rows),
                             reinterpret_cast<uint64_t>(acts_->block.data()), uint64_t(prec_),
                             uint64_t(weights != nullptr)};
  train_graph_.run(device_, key, [&] { train_device_phase(B, T, weights != nullptr); });
  if (defer_loss) {
    loss_deferred_ = true;
    info.loss = info.balance_loss = std::nan("");
    return last_ = info;
  }
  const LossSums sums = take_loss_sums();  // this call's alone: nothing was waiting
  info.loss = sums.loss;
  info.balance_loss = sums.balance;
  return last_ = info;
}

// Reads no host value and makes no host read, and allocates nothing but the ops' step-workspace scratch:
// a CUDA graph can capture it once per batch shape and replay it. Its per-call values (the batch, weights,
// grad_per_token, grad_scale, the loss divisor) come from the staged device buffers.
void Model::train_device_phase(int B, int T, bool weighted) {
  Acts& a = *acts_;
  const bool has_moe = cfg_.n_dense_layers < cfg_.n_layer;
  const Tensor w = weighted ? a.weights : Tensor();
  run_forward(B, T, /*train=*/true);
  head_loss(/*train=*/true, w);
  accumulate_losses(loss_sums_, a.losses, w, loss_divisor_, has_moe ? a.balance : Tensor());
  run_backward(B, T);
}

LossSums Model::take_loss_sums() {
  double host[2];
  copy_to_host(host, loss_sums_);
  zero_tensor(loss_sums_);
  loss_deferred_ = false;
  return {host[0], host[1]};
}

LossInfo Model::forward(const int32_t* tokens, const int32_t* targets, int B, int T, float* token_losses) {
  NW_CHECK(targets, "forward needs targets (use logits() for none)");
  check_batch(tokens, targets, B, T);
  prepare(B, T, /*full_logits=*/false);
  const int64_t N = int64_t(B) * T;
  LossInfo info;
  info.n_targets = count_targets(targets, N);
  stage_batch(tokens, targets);
  run_forward(B, T, /*train=*/false);
  info.balance_loss = read_balance_loss();
  head_loss(/*train=*/false, Tensor());
  const double total = sum_losses(N, token_losses);
  info.loss = info.n_targets ? total / double(info.n_targets) : 0.0;
  return last_ = info;
}

void Model::logits(const int32_t* tokens, int B, int T, float* out) {
  check_batch(tokens, nullptr, B, T);
  prepare(B, T, /*full_logits=*/true);
  stage_batch(tokens, nullptr);
  run_forward(B, T, /*train=*/false);
  copy_logits(out);
}

void Model::route(const int32_t* tokens, int B, int T, int32_t* experts, float* scores) {
  check_batch(tokens, nullptr, B, T);
  prepare(B, T, /*full_logits=*/false);  // no head: the chunk scratch is the smaller plan
  stage_batch(tokens, nullptr);
  run_forward(B, T, /*train=*/false);
  const int64_t N = int64_t(B) * T, K = cfg_.top_k, E = cfg_.n_experts;
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const int m = acts_->params[l].moe_index;
    if (m < 0) continue;
    const LayerActs& x = acts_->layers[l];
    copy_to_host(experts + m * N * K, x.topk);
    float* dst = scores + m * N * E;
    if (dtype_ == DType::F64) {
      std::vector<double> d(N * E);
      copy_to_host(d.data(), x.scores);
      std::transform(d.begin(), d.end(), dst, [](double v) { return static_cast<float>(v); });
    } else {
      copy_to_host(dst, x.scores);
    }
  }
}

void Model::head_loss(bool train, const Tensor& weights) {
  Acts& a = *acts_;
  const int h = head_index();
  head_cross_entropy(a.losses, train ? a.d_ln : Tensor(), train ? grads_.view(h) : Tensor(), a.logits, a.lnf,
                     params_.view(h), a.targets, weights, cfg_.softcap, train ? grad_per_token_ : Tensor(), prec_);
}

void Model::copy_logits(float* out) {
  linear_forward(acts_->logits, acts_->lnf, params_.view(head_index()), prec_);
  softcap(acts_->logits, cfg_.softcap);
  if (dtype_ == DType::F64) {
    std::vector<double> d(acts_->logits.numel());
    copy_to_host(d.data(), acts_->logits);
    for (size_t i = 0; i < d.size(); ++i) out[i] = static_cast<float>(d[i]);
  } else {
    copy_to_host(out, acts_->logits);
  }
}

void Model::decode(const int32_t* tokens, int B, int T, KVCache& cache, float* out) {
  NW_CHECK(cache.fits(cfg_, dtype_, device_), "decode: this KV cache was made for a model of another shape");
  NW_CHECK(B == cache.batch(), "decode: the cache holds ", cache.batch(), " sequences, got a batch of ", B);
  NW_CHECK(cache.length() + T <= cache.capacity(), "decode: ", cache.length(), " cached + ", T,
           " new positions exceed seq_len ", cache.capacity());
  check_batch(tokens, nullptr, B, T);
  prepare(B, T, /*full_logits=*/true);
  stage_batch(tokens, nullptr);
  run_forward(B, T, /*train=*/false, &cache);
  cache.advance(T);
  copy_logits(out);
}

void Model::decode_rows(const int32_t* tokens, int B, int T, KVCache& cache, const int* rows, const int64_t* at,
                        float* out) {
  NW_CHECK(cache.fits(cfg_, dtype_, device_), "decode_rows: this KV cache was made for a model of another shape");
  for (int b = 0; b < B; ++b) {
    NW_CHECK(rows[b] >= 0 && rows[b] < cache.batch(), "decode_rows: cache row ", rows[b], " outside [0, ",
             cache.batch(), ")");
    NW_CHECK(at[b] >= 0 && at[b] + T <= cache.capacity(), "decode_rows: position ", at[b], " + ", T,
             " new positions exceed seq_len ", cache.capacity());
  }
  check_batch(tokens, nullptr, B, T);
  prepare(B, T, /*full_logits=*/true);
  stage_batch(tokens, nullptr);
  run_forward(B, T, /*train=*/false, &cache, rows, at);
  copy_logits(out);
}

int Model::generate(const int32_t* prompt, int B, int Tp, int max_new, const SamplingParams& p, int stop_token,
                    int32_t* out) {
  Generation gen(*this, prompt, B, Tp, max_new, p, stop_token >= 0 ? std::vector<int32_t>{stop_token} : std::vector<int32_t>{});
  const int64_t width = Tp + max_new;
  std::vector<int32_t> fresh(int64_t(B) * std::max(max_new, 1));
  const int produced = max_new > 0 ? gen.step(max_new, fresh.data()) : 0;
  for (int b = 0; b < B; ++b) {
    std::copy_n(prompt + int64_t(b) * Tp, Tp, out + b * width);
    std::copy_n(fresh.data() + int64_t(b) * max_new, produced, out + b * width + Tp);
  }
  return Tp + produced;
}

void Model::update_balance_bias(float gamma) {
  NW_CHECK(gamma >= 0 && std::isfinite(gamma), "balance gamma must be finite and >= 0, got ", gamma);
  const int64_t E = cfg_.n_experts;
  for (const LayerParams& p : acts_->params)
    if (p.moe_index >= 0)
      moe_update_bias(buffers_.view(p.bias), pending_counts_.slice_rows(p.moe_index, p.moe_index + 1).view({E}), gamma);
  if (pending_counts_.numel() == 0) return;
  copy_tensor(step_counts_, pending_counts_);  // the step's counts stay readable
  zero_tensor(pending_counts_);
}

void Model::update_balance_bias(const StepControl& control) {
  const int64_t E = cfg_.n_experts;
  for (const LayerParams& p : acts_->params) {
    if (p.moe_index < 0) continue;
    auto row = [&](const Tensor& t) { return t.slice_rows(p.moe_index, p.moe_index + 1).view({E}); };
    moe_balance_step(buffers_.view(p.bias), row(pending_counts_), row(step_counts_), &control);
  }
}

std::vector<RoutingStats> Model::routing_stats() const {
  std::vector<RoutingStats> out;
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const LayerParams& p = acts_->params[l];
    if (p.moe_index < 0) continue;
    RoutingStats s;
    s.layer = l;
    const int64_t E = cfg_.n_experts;
    std::vector<int64_t> pending(E);
    copy_to_host(pending.data(), pending_counts_.slice_rows(p.moe_index, p.moe_index + 1).view({E}));
    const bool has_pending = std::any_of(pending.begin(), pending.end(), [](int64_t c) { return c > 0; });
    s.tokens_per_expert.resize(E);
    if (has_pending) s.tokens_per_expert = pending;
    else copy_to_host(s.tokens_per_expert.data(), step_counts_.slice_rows(p.moe_index, p.moe_index + 1).view({E}));
    int64_t total = 0, mx = 0;
    s.dead_experts = 0;
    for (int64_t c : s.tokens_per_expert) {
      total += c;
      mx = std::max(mx, c);
      s.dead_experts += c == 0;
    }
    const double mean = double(total) / double(cfg_.n_experts);
    s.max_violation = mean > 0 ? (double(mx) - mean) / mean : 0.0;
    const Tensor bias = buffers_.view(p.bias);
    s.bias.resize(cfg_.n_experts);
    if (dtype_ == DType::F64) {
      copy_to_host(s.bias.data(), bias);
    } else {
      std::vector<float> f(cfg_.n_experts);
      copy_to_host(f.data(), bias);
      s.bias.assign(f.begin(), f.end());
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace nw
