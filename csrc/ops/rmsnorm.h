// RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) * w. The gain w is optional
// (QK-norm uses none).
#pragma once
#include "core/tensor.h"

namespace nw {
void rmsnorm_forward(const Tensor& y /*(N, C)*/, const Tensor& rstd /*(N)*/, const Tensor& x /*(N, C)*/,
                     const Tensor& w /*(C) or undefined*/, float eps);
// dx is overwritten; dw (if defined) is accumulated.
void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                      const Tensor& rstd);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x,
    const Tensor& w, float eps);
template <typename T>
void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
    const Tensor& rstd);
}  // namespace cpu
namespace cuda {
void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x,
    const Tensor& w, float eps);
void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
    const Tensor& rstd);
}  // namespace cuda
}  // namespace nw
