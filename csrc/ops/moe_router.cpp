#include "ops/moe_router.h"

#include <algorithm>

#include "core/profiler.h"
#include "ops/dispatch.h"
#include "ops/optimizer_ops.h"

namespace nw {

static void check_router(const Tensor& scores, const Tensor& topk, const Tensor& gates, int batch, const char* op) {
  NW_CHECK(scores.ndim == 2 && topk.ndim == 2, op, ": scores (N, E) and topk (N, K) expected, got ",
           scores.describe(), " and ", topk.describe());
  const int64_t N = scores.size(0), E = scores.size(1), K = topk.size(1);
  NW_CHECK(K >= 1 && K <= E, op, ": top_k must be in [1, ", E, "], got ", K);
  NW_CHECK(batch >= 1 && N % batch == 0, op, ": ", N, " tokens do not split into ", batch, " sequences");
  check_tensor(topk, op, "topk", DType::I32, scores.device, {N, K});
  check_tensor(gates, op, "gates", scores.dtype, scores.device, {N, K});
}

double moe_router_forward(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& logits,
                          const Tensor& bias, int batch, float route_scale, float balance_alpha) {
  const profiler::Scope scope("moe_router_forward", scores.device);
  const char* op = "moe_router_forward";
  check_router(scores, topk, gates, batch, op);
  check_tensor(logits, op, "logits", scores.dtype, scores.device, {scores.size(0), scores.size(1)});
  check_tensor(bias, op, "bias", scores.dtype, scores.device, {scores.size(1)});
  if (scores.device == Device::CUDA)
    return cuda::moe_router_forward(scores, topk, gates, logits, bias, batch, route_scale, balance_alpha);
  double loss = 0;
  NW_DISPATCH_CPU(scores.dtype, T,
                  loss = cpu::moe_router_forward<T>(scores, topk, gates, logits, bias, batch, route_scale, balance_alpha));
  return loss;
}

void moe_route(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& counts,
               const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row, const Tensor& balance,
               const Tensor& logits, const Tensor& bias, int batch, float route_scale, float balance_alpha) {
  const profiler::Scope scope("moe_route", scores.device);
  const char* op = "moe_route";
  check_router(scores, topk, gates, batch, op);
  const Device dev = scores.device;
  const int64_t N = scores.size(0), E = scores.size(1), K = topk.size(1);
  check_tensor(logits, op, "logits", scores.dtype, dev, {N, E});
  check_tensor(bias, op, "bias", scores.dtype, dev, {E});
  check_tensor(counts, op, "counts", DType::I32, dev, {E});
  check_tensor(offsets, op, "offsets", DType::I32, dev, {E + 1});
  check_tensor(row_of_slot, op, "row_of_slot", DType::I32, dev, {N * K});
  check_tensor(token_of_row, op, "token_of_row", DType::I32, dev, {N * K});
  check_tensor(balance, op, "balance", DType::F64, dev, {1});
  if (dev == Device::CUDA)
    return cuda::moe_route(scores, topk, gates, counts, offsets, row_of_slot, token_of_row, balance, logits, bias,
                           batch, route_scale, balance_alpha);
  NW_DISPATCH_CPU(scores.dtype, T,
                  cpu::moe_route<T>(scores, topk, gates, counts, offsets, row_of_slot, token_of_row, balance, logits,
                                    bias, batch, route_scale, balance_alpha));
}

void moe_router_backward(const Tensor& dlogits, const Tensor& dgates, const Tensor& scores, const Tensor& topk,
                         int batch, float route_scale, float balance_alpha, const Tensor& grad_scale) {
  const profiler::Scope scope("moe_router_backward", dlogits.device);
  const char* op = "moe_router_backward";
  check_router(scores, topk, dgates, batch, op);
  check_tensor(dlogits, op, "dlogits", scores.dtype, scores.device, {scores.size(0), scores.size(1)});
  check_tensor(grad_scale, op, "grad_scale", scores.dtype, scores.device, {1});
  if (scores.device == Device::CUDA)
    return cuda::moe_router_backward(dlogits, dgates, scores, topk, batch, route_scale, balance_alpha, grad_scale);
  NW_DISPATCH_CPU(scores.dtype, T,
                  cpu::moe_router_backward<T>(dlogits, dgates, scores, topk, batch, route_scale, balance_alpha, grad_scale));
}

void moe_update_bias(const Tensor& bias, const Tensor& counts, float gamma) {
  const profiler::Scope scope("moe_update_bias", bias.device);
  NW_CHECK(bias.ndim == 1, "moe_update_bias: bias must be (E), got ", bias.describe());
  // Counts may come from the host (accumulated there) or from the bias's own device.
  NW_CHECK(counts.device == Device::CPU || counts.device == bias.device,
           "moe_update_bias: counts must be on the host or on the bias's device, got ", counts.describe());
  check_tensor(counts, "moe_update_bias", "counts", DType::I64, counts.device, {bias.size(0)});
  if (bias.device == Device::CUDA) return cuda::moe_update_bias(bias, counts, gamma);
  NW_DISPATCH_CPU(bias.dtype, T, cpu::moe_update_bias<T>(bias, counts, gamma));
}

void moe_balance_step(const Tensor& bias, const Tensor& pending, const Tensor& step_counts,
                      const StepControl* control) {
  const profiler::Scope scope("moe_balance_step", bias.device);
  NW_CHECK(bias.ndim == 1, "moe_balance_step: bias must be (E), got ", bias.describe());
  check_tensor(pending, "moe_balance_step", "pending", DType::I64, bias.device, {bias.size(0)});
  check_tensor(step_counts, "moe_balance_step", "step_counts", DType::I64, bias.device, {bias.size(0)});
  if (bias.device == Device::CUDA) return cuda::moe_balance_step(bias, pending, step_counts, control);
  if (!control->apply) return;
  NW_DISPATCH_CPU(bias.dtype, T, cpu::moe_update_bias<T>(bias, pending, control->scalars.balance_gamma));
  std::copy_n(pending.ptr<int64_t>(), pending.numel(), step_counts.ptr<int64_t>());
  std::fill_n(pending.ptr<int64_t>(), pending.numel(), int64_t(0));
}

void moe_accumulate_counts(const Tensor& total, const Tensor& counts) {
  const profiler::Scope scope("moe_accumulate_counts", total.device);
  NW_CHECK(total.ndim == 1, "moe_accumulate_counts: total must be (E), got ", total.describe());
  check_tensor(total, "moe_accumulate_counts", "total", DType::I64, total.device, {total.size(0)});
  check_tensor(counts, "moe_accumulate_counts", "counts", DType::I32, total.device, {total.size(0)});
  if (total.device == Device::CUDA) return cuda::moe_accumulate_counts(total, counts);
  cpu::moe_accumulate_counts(total, counts);
}

}  // namespace nw
