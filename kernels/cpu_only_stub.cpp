// The CUDA backend of a CPU-only build: every entry point throws, so a CPU build links and a
// request for the GPU fails with a clear message instead of crashing.
#include "core/cuda_device.h"
#include "core/cuda_graph.h"
#include "core/error.h"
#include "core/step_workspace.h"
#include "ops/accumulate_losses.h"
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
#include "ops/residual_rmsnorm.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"

namespace nw::cuda {

[[noreturn]] static void no_cuda(const char* what) {
  throw Error(std::string(what) + ": nanowhale was built without CUDA (no nvcc was found at build time; "
              "reinstall with the CUDA toolkit on PATH to use device='cuda')");
}

bool available() { return false; }
void synchronize() { no_cuda("synchronize"); }
bool open_step_workspace() { no_cuda("open_step_workspace"); }
void close_step_workspace() {}
int64_t scratch_pool_allocations() { return 0; }
int64_t step_workspace_generation() { return 0; }
void Graph::capture(const std::function<void()>&) { no_cuda("Graph::capture"); }
void Graph::replay() const { no_cuda("Graph::replay"); }
void Graph::reset() {}
void* device_alloc(size_t) { no_cuda("device_alloc"); }
void device_free(void*) {}
void device_memset_zero(void*, size_t) { no_cuda("device_memset_zero"); }
void copy_host_to_device(void*, const void*, size_t) { no_cuda("copy_host_to_device"); }
void copy_device_to_host(void*, const void*, size_t) { no_cuda("copy_device_to_host"); }
void copy_device_to_device(void*, const void*, size_t) { no_cuda("copy_device_to_device"); }
void* pinned_alloc(size_t) { no_cuda("pinned_alloc"); }
void pinned_free(void*) {}
void copy_host_to_device_async(void*, const void*, size_t) { no_cuda("copy_host_to_device_async"); }
void stage_host_to_device(void*, const void*, size_t) { no_cuda("stage_host_to_device"); }

void accumulate_losses(const Tensor& acc, const Tensor& losses, const Tensor& weights, const Tensor& divisor, const Tensor& balance) { no_cuda("accumulate_losses"); }
void activation_forward(Activation a, const Tensor& h, const Tensor& pre) { no_cuda("activation_forward"); }
void activation_backward(Activation a, const Tensor& dpre, const Tensor& dh, const Tensor& pre) { no_cuda("activation_backward"); }
void attention_forward(const Tensor& y, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v, int window, Precision) { no_cuda("attention_forward"); }
void attention_forward_kv(const Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v, int64_t kv_len, int window, Precision) { no_cuda("attention_forward_kv"); }
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dy, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& y, const Tensor& lse, int window, Precision) { no_cuda("attention_backward"); }
void softcap_cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits, const Tensor& targets, const Tensor& weights, float cap, const Tensor& grad_per_token) { no_cuda("softcap_cross_entropy"); }
void softcap(const Tensor& logits, float cap) { no_cuda("softcap"); }
void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) { no_cuda("embedding_forward"); }
void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& tokens) { no_cuda("embedding_backward"); }
void grouped_linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& offsets, Precision) { no_cuda("grouped_linear_forward"); }
void grouped_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& offsets, Precision) { no_cuda("grouped_linear_backward"); }
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, Precision) { no_cuda("linear_forward"); }
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, Precision) { no_cuda("linear_backward"); }
void moe_dispatch(const Tensor& counts, const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row, const Tensor& topk) { no_cuda("moe_dispatch"); }
void moe_gather(const Tensor& xe, const Tensor& x, const Tensor& token_of_row) { no_cuda("moe_gather"); }
void moe_gather_backward(const Tensor& dx, const Tensor& dxe, const Tensor& row_of_slot) { no_cuda("moe_gather_backward"); }
void moe_combine(const Tensor& y, const Tensor& ye, const Tensor& gates, const Tensor& row_of_slot) { no_cuda("moe_combine"); }
void moe_combine_backward(const Tensor& dye, const Tensor& dgates, const Tensor& dy, const Tensor& ye, const Tensor& gates, const Tensor& row_of_slot) { no_cuda("moe_combine_backward"); }
double moe_router_forward(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& logits, const Tensor& bias, int batch, float route_scale, float balance_alpha) { no_cuda("moe_router_forward"); }
void moe_route(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& counts, const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row, const Tensor& balance, const Tensor& logits, const Tensor& bias, int batch, float route_scale, float balance_alpha) { no_cuda("moe_route"); }
void moe_router_backward(const Tensor& dlogits, const Tensor& dgates, const Tensor& scores, const Tensor& topk, int batch, float route_scale, float balance_alpha, const Tensor& grad_scale) { no_cuda("moe_router_backward"); }
void moe_accumulate_counts(const Tensor& total, const Tensor& counts) { no_cuda("moe_accumulate_counts"); }
void moe_update_bias(const Tensor& bias, const Tensor& counts, float gamma) { no_cuda("moe_update_bias"); }
void moe_balance_step(const Tensor&, const Tensor&, const Tensor&, const StepControl*) { no_cuda("moe_balance_step"); }
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a) { no_cuda("adamw_update"); }
void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace, const MuonArgs& a) { no_cuda("muon_update"); }
void newton_schulz(const Tensor& x, const Tensor& workspace, int steps, Precision p) { no_cuda("newton_schulz"); }
double sum_squares(const Tensor& x) { no_cuda("sum_squares"); }
void scale_inplace(const Tensor& x, float s) { no_cuda("scale_inplace"); }
void clip_control(StepControl*, double*, const Tensor&, float) { no_cuda("clip_control"); }
int64_t clip_partials(int64_t) { no_cuda("clip_partials"); }
void scale_by_control(const Tensor&, const StepControl*) { no_cuda("scale_by_control"); }
void residual_add(const Tensor& x, const Tensor& f) { no_cuda("residual_add"); }
void residual_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& f, const Tensor& w, float eps) { no_cuda("residual_rmsnorm_forward"); }
void residual_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd) { no_cuda("residual_rmsnorm_backward"); }
void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w, float eps) { no_cuda("rmsnorm_forward"); }
void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd) { no_cuda("rmsnorm_backward"); }
void rmsnorm_gain_backward(const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& rstd) { no_cuda("rmsnorm_gain_backward"); }
void rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin) { no_cuda("rope_forward"); }
void rope_backward(const Tensor& dx, const Tensor& cos, const Tensor& sin) { no_cuda("rope_backward"); }
void rope_tables(const Tensor& cos, const Tensor& sin, double base) { no_cuda("rope_tables"); }

}  // namespace nw::cuda
