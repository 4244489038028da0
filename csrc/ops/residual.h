// Residual connection x += f. Its backward is the same op: the branch's input gradient is added to
// the residual stream's gradient.
#pragma once
#include "core/tensor.h"

namespace nw {
void residual_add(const Tensor& x /*(N, C), updated*/, const Tensor& f /*(N, C)*/);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void residual_add(const Tensor& x, const Tensor& f);
}  // namespace cpu
namespace cuda {
void residual_add(const Tensor& x, const Tensor& f);
}  // namespace cuda
}  // namespace nw
