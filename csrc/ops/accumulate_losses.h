// Adds a training micro-batch's loss and balance loss to a running pair on the device, so the training step
// reads them once, when the caller asks, instead of once per micro-batch:
//   acc[0] += (sum_n w_n * losses_n) / divisor   (w_n = 1 without weights; a divisor of 0 adds 0)
//   acc[1] += balance[0]                         (nothing without balance)
// The divisor is #targets for the mean loss and 1 for weighted losses; it divides (rather than multiplying
// by its inverse) so the sum has the bits of the loss forward_backward returns. Every per-call value is read
// from device memory: a replayed CUDA graph adds each step's. The sum runs in float64 in a fixed order
// (CPU: token order; CUDA: one block, each thread a fixed stride, then a fixed tree): deterministic.
#pragma once
#include "core/tensor.h"

namespace nw {
void accumulate_losses(const Tensor& acc /*(2) f64*/, const Tensor& losses /*(N)*/,
                       const Tensor& weights /*(N) like losses, or undefined*/, const Tensor& divisor /*(1) f64*/,
                       const Tensor& balance /*(1) f64 or undefined*/);

// Backends: cpu/ holds the oracle (T = float or double, the losses' dtype), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void accumulate_losses(const Tensor& acc, const Tensor& losses, const Tensor& weights, const Tensor& divisor,
                       const Tensor& balance);
}  // namespace cpu
namespace cuda {
void accumulate_losses(const Tensor& acc, const Tensor& losses, const Tensor& weights, const Tensor& divisor,
                       const Tensor& balance);
}  // namespace cuda
}  // namespace nw
