// The MoE router (DESIGN.md §3), fp32: s = sigmoid(logits); experts are selected by top-k of s + bias
// (ties to the lowest index); gates are the selected s renormalised to sum 1, times route_scale.
// The sequence-wise balance loss alpha * sum_i f_i P_i (averaged over sequences) is fused in.
// moe_route fuses the dispatch (ops/moe_dispatch.h) in as well, for the model's forward.
#pragma once
#include "core/tensor.h"

namespace nw {
struct StepControl;  // ops/optimizer_ops.h

// Returns the balance loss. logits, scores: (B*T, E); topk: (B*T, K) i32; gates: (B*T, K).
double moe_router_forward(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& logits,
                          const Tensor& bias /*(E)*/, int batch, float route_scale, float balance_alpha);
// moe_router_forward followed by moe_dispatch on its topk, the loss added to balance instead of returned:
// on CUDA one chain of kernels whose results (the per-expert counts and offsets the grouped expert matmuls
// read, the loss) stay on the device. counts (E), offsets (E+1), row_of_slot and token_of_row (N*K) i32;
// balance (1) float64, accumulated.
void moe_route(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& counts,
               const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row, const Tensor& balance,
               const Tensor& logits, const Tensor& bias, int batch, float route_scale, float balance_alpha);
// dlogits (overwritten) = d(gates)/d(logits)^T dgates + grad_scale * d(balance loss)/d(logits). grad_scale is
// a one-element tensor in the scores' dtype on their device, read by the backend (not a kernel argument, so
// a replayed CUDA graph uses each step's value).
void moe_router_backward(const Tensor& dlogits, const Tensor& dgates, const Tensor& scores, const Tensor& topk,
                         int batch, float route_scale, float balance_alpha, const Tensor& grad_scale /*(1)*/);
// Aux-loss-free balancing: bias_i += gamma * sign(mean(counts) - counts_i). All-zero counts change nothing.
void moe_update_bias(const Tensor& bias /*(E)*/, const Tensor& counts /*(E) i64*/, float gamma);
// The optimizer step's bias update of one MoE layer, decided by its control block (in the bias's memory):
// when control->apply, moe_update_bias from pending with gamma = control->scalars.balance_gamma, then
// step_counts = pending (the step's counts stay readable) and pending = 0; otherwise nothing changes.
void moe_balance_step(const Tensor& bias /*(E)*/, const Tensor& pending /*(E) i64*/,
                      const Tensor& step_counts /*(E) i64*/, const StepControl* control);
// total += counts: routing counts summed over the micro-batches of a step, on the device (no host sync).
void moe_accumulate_counts(const Tensor& total /*(E) i64*/, const Tensor& counts /*(E) i32*/);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
double moe_router_forward(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& logits,
    const Tensor& bias, int batch, float route_scale, float balance_alpha);
template <typename T>
void moe_route(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& counts,
    const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row, const Tensor& balance,
    const Tensor& logits, const Tensor& bias, int batch, float route_scale, float balance_alpha);
template <typename T>
void moe_router_backward(const Tensor& dlogits, const Tensor& dgates, const Tensor& scores, const Tensor& topk,
    int batch, float route_scale, float balance_alpha, const Tensor& grad_scale);
template <typename T>
void moe_update_bias(const Tensor& bias, const Tensor& counts, float gamma);
void moe_accumulate_counts(const Tensor& total, const Tensor& counts);
}  // namespace cpu
namespace cuda {
double moe_router_forward(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& logits,
    const Tensor& bias, int batch, float route_scale, float balance_alpha);
void moe_route(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& counts,
    const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row, const Tensor& balance,
    const Tensor& logits, const Tensor& bias, int batch, float route_scale, float balance_alpha);
void moe_router_backward(const Tensor& dlogits, const Tensor& dgates, const Tensor& scores, const Tensor& topk,
    int batch, float route_scale, float balance_alpha, const Tensor& grad_scale);
void moe_update_bias(const Tensor& bias, const Tensor& counts, float gamma);
void moe_balance_step(const Tensor& bias, const Tensor& pending, const Tensor& step_counts, const StepControl* control);
void moe_accumulate_counts(const Tensor& total, const Tensor& counts);
}  // namespace cuda
}  // namespace nw
