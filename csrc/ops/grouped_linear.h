// The experts' matmul: rows offsets[e] .. offsets[e+1] of x go through expert e's matrix,
// y[r] = x[r] · W_e^T. One call for all experts; an expert with no rows is skipped.
#pragma once
#include "core/precision.h"
#include "core/tensor.h"

namespace nw {
void grouped_linear_forward(const Tensor& y /*(R, out)*/, const Tensor& x /*(R, in)*/,
                            const Tensor& w /*(E, out, in)*/, const Tensor& offsets /*(E+1) i32*/,
                            Precision precision = Precision::FP32);
// dx (if defined) is overwritten; dw is accumulated.
void grouped_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                             const Tensor& w, const Tensor& offsets, Precision precision = Precision::FP32);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void grouped_linear_forward(const Tensor& y, const Tensor& x,
    const Tensor& w, const Tensor& offsets, Precision p);
template <typename T>
void grouped_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
    const Tensor& w, const Tensor& offsets, Precision p);
}  // namespace cpu
namespace cuda {
void grouped_linear_forward(const Tensor& y, const Tensor& x,
    const Tensor& w, const Tensor& offsets, Precision p);
void grouped_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
    const Tensor& w, const Tensor& offsets, Precision p);
}  // namespace cuda
}  // namespace nw
