// Linear layer without bias: y = x · W^T with W stored (out, in), as in PyTorch.
#pragma once
#include "core/precision.h"
#include "core/tensor.h"

namespace nw {
void linear_forward(const Tensor& y /*(N, out)*/, const Tensor& x /*(N, in)*/, const Tensor& w /*(out, in)*/,
                    Precision precision = Precision::FP32);
// dx (if defined) is overwritten; dw is accumulated (gradient accumulation, tied weights).
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                     Precision precision = Precision::FP32);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, Precision p);
template <typename T>
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                     Precision p);
}  // namespace cpu
namespace cuda {
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, Precision p);
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                     Precision p);
}  // namespace cuda
}  // namespace nw
