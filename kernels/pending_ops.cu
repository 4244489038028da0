// CUDA entry points whose kernels are not written yet (the CUDA backend issue fills these in one by
// one). Each throws a clear error; rmsnorm.cu is the first real kernel.
#include "core/error.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/grouped_linear.h"
#include "ops/linear.h"
#include "ops/moe_dispatch.h"
#include "ops/moe_router.h"
#include "ops/optimizer_ops.h"
#include "ops/residual.h"
#include "ops/rope.h"

namespace nw::cuda {

[[noreturn]] static void not_yet(const char* what) {
  throw Error(std::string(what) + ": this op has no CUDA kernel yet; use device='cpu'");
}

void activation_forward(Activation a, const Tensor& h, const Tensor& pre) { not_yet("activation_forward"); }
void activation_backward(Activation a, const Tensor& dpre, const Tensor& dh, const Tensor& pre) { not_yet("activation_backward"); }
void attention_forward(const Tensor& y, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, int window) { not_yet("attention_forward"); }
void attention_forward_kv(const Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v, int64_t kv_len, int window) { not_yet("attention_forward_kv"); }
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dy, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& y, const Tensor& lse, int window) { not_yet("attention_backward"); }
void softcap_cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits, const Tensor& targets, float cap, float grad_per_token) { not_yet("softcap_cross_entropy"); }
void softcap(const Tensor& logits, float cap) { not_yet("softcap"); }
void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) { not_yet("embedding_forward"); }
void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& tokens) { not_yet("embedding_backward"); }
void grouped_linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& offsets) { not_yet("grouped_linear_forward"); }
void grouped_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& offsets) { not_yet("grouped_linear_backward"); }
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w) { not_yet("linear_forward"); }
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) { not_yet("linear_backward"); }
void moe_dispatch(const Tensor& counts, const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row, const Tensor& topk) { not_yet("moe_dispatch"); }
void moe_gather(const Tensor& xe, const Tensor& x, const Tensor& token_of_row) { not_yet("moe_gather"); }
void moe_gather_backward(const Tensor& dx, const Tensor& dxe, const Tensor& row_of_slot) { not_yet("moe_gather_backward"); }
void moe_combine(const Tensor& y, const Tensor& ye, const Tensor& gates, const Tensor& row_of_slot) { not_yet("moe_combine"); }
void moe_combine_backward(const Tensor& dye, const Tensor& dgates, const Tensor& dy, const Tensor& ye, const Tensor& gates, const Tensor& row_of_slot) { not_yet("moe_combine_backward"); }
double moe_router_forward(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& logits, const Tensor& bias, int batch, float route_scale, float balance_alpha) { not_yet("moe_router_forward"); }
void moe_router_backward(const Tensor& dlogits, const Tensor& dgates, const Tensor& scores, const Tensor& topk, int batch, float route_scale, float balance_alpha, float grad_scale) { not_yet("moe_router_backward"); }
void moe_update_bias(const Tensor& bias, const Tensor& counts, float gamma) { not_yet("moe_update_bias"); }
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a) { not_yet("adamw_update"); }
void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace, const MuonArgs& a) { not_yet("muon_update"); }
void newton_schulz(const Tensor& x, const Tensor& workspace, int steps) { not_yet("newton_schulz"); }
double sum_squares(const Tensor& x) { not_yet("sum_squares"); }
void scale_inplace(const Tensor& x, float s) { not_yet("scale_inplace"); }
void residual_add(const Tensor& x, const Tensor& f) { not_yet("residual_add"); }
void rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin) { not_yet("rope_forward"); }
void rope_backward(const Tensor& dx, const Tensor& cos, const Tensor& sin) { not_yet("rope_backward"); }
void rope_tables(const Tensor& cos, const Tensor& sin, double base) { not_yet("rope_tables"); }

}  // namespace nw::cuda
