// Logit soft-cap fused with cross-entropy: c = cap * tanh(z / cap), loss_n = logsumexp(c_n) - c_n[target_n].
// Targets of -1 are ignored (loss 0, zero gradient). cap <= 0 disables the soft-cap.
// Per-token weights w_n (any sign) make the gradient that of sum_n w_n * loss_n: one path for the mean
// loss (w = 1/#targets), SFT masks, DPO's per-sequence weights and policy-gradient advantages.
#pragma once
#include "core/tensor.h"

namespace nw {
// losses (N) receives each token's unweighted loss in nats. If dlogits is defined it receives
// grad_per_token * w_n * dloss_n/dz_n (w_n = 1 when weights is undefined); it may alias logits (the row
// is read before it is written). weights and grad_per_token have the logits' dtype and device;
// grad_per_token is a one-element tensor read by the backend (not a kernel argument, so a replayed CUDA
// graph uses each step's value), needed only with dlogits.
void softcap_cross_entropy(const Tensor& losses /*(N)*/, const Tensor& dlogits /*(N, V) or undefined*/,
                           const Tensor& logits /*(N, V)*/, const Tensor& targets /*(N) i32*/,
                           const Tensor& weights /*(N) or undefined*/, float cap,
                           const Tensor& grad_per_token /*(1) or undefined*/);
// Applies the soft-cap to logits in place (for returning logits to the user).
void softcap(const Tensor& logits, float cap);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void softcap_cross_entropy(const Tensor& losses, const Tensor& dlogits,
    const Tensor& logits, const Tensor& targets, const Tensor& weights, float cap,
    const Tensor& grad_per_token);
template <typename T>
void softcap(const Tensor& logits, float cap);
}  // namespace cpu
namespace cuda {
void softcap_cross_entropy(const Tensor& losses, const Tensor& dlogits,
    const Tensor& logits, const Tensor& targets, const Tensor& weights, float cap,
    const Tensor& grad_per_token);
void softcap(const Tensor& logits, float cap);
}  // namespace cuda
}  // namespace nw
