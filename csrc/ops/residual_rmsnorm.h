// The residual add fused with the RMSNorm that reads its result: in the pre-norm block every sub-block's
// output is added to the stream and the stream is normalised at once (for the next sub-block, or for
// the head), so one pass over each row does both.
//   forward:  x += f; y = x / sqrt(mean(x^2) + eps) * w   (rstd saved for the backward)
//   backward: dx += d(rmsnorm)/dx^T dy                   (the stream's gradient collects the norm's)
// The arithmetic is residual_add then rmsnorm_forward (rmsnorm_backward then residual_add) in the same
// order, so on the CPU the fused op gives the unfused sequence's bits.
#pragma once
#include "core/tensor.h"

namespace nw {
void residual_rmsnorm_forward(const Tensor& y /*(N, C)*/, const Tensor& rstd /*(N)*/, const Tensor& x /*(N, C), updated*/,
                              const Tensor& f /*(N, C)*/, const Tensor& w /*(C) or undefined*/, float eps);
// dx (the residual stream's gradient) and dw (if defined) are accumulated; x is the forward's updated x.
void residual_rmsnorm_backward(const Tensor& dx /*(N, C)*/, const Tensor& dw, const Tensor& dy, const Tensor& x,
                               const Tensor& w, const Tensor& rstd);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void residual_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& f, const Tensor& w,
    float eps);
template <typename T>
void residual_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
    const Tensor& rstd);
}  // namespace cpu
namespace cuda {
void residual_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& f, const Tensor& w,
    float eps);
void residual_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
    const Tensor& rstd);
}  // namespace cuda
}  // namespace nw
