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
// The pieces the fused residual add + RMSNorm shares: one row's y (returns its rstd), one row's dx
// (overwritten; w may be null), and dw += the gain gradient over all rows.
template <typename T>
T rmsnorm_row_forward(T* y, const T* x, const T* w, int64_t C, float eps);
template <typename T>
void rmsnorm_row_backward(T* dx, const T* dy, const T* x, const T* w, T rstd, int64_t C);
template <typename T>
void rmsnorm_gain_backward(const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& rstd);
}  // namespace cpu
namespace cuda {
void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x,
    const Tensor& w, float eps);
void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
    const Tensor& rstd);
void rmsnorm_gain_backward(const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& rstd);
}  // namespace cuda
}  // namespace nw
