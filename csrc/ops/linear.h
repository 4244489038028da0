// Linear layer without bias: y = x · W^T with W stored (out, in), as in PyTorch.
#pragma once
#include "core/tensor.h"

namespace nw {
void linear_forward(const Tensor& y /*(N, out)*/, const Tensor& x /*(N, in)*/, const Tensor& w /*(out, in)*/);
// dx (if defined) is overwritten; dw is accumulated (gradient accumulation, tied weights).
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w);
template <typename T>
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w);
}  // namespace cpu
namespace cuda {
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w);
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w);
}  // namespace cuda
}  // namespace nw
