// MLP activations. ReLU^2: h = max(x, 0)^2 on (N, H). SwiGLU: the input is (N, 2H) = [gate | up] and
// h = silu(gate) * up.
#pragma once
#include "core/tensor.h"

namespace nw {
enum class Activation { ReLU2, SwiGLU };
Activation parse_activation(const std::string& name);
// Width of the first matrix's output for a hidden size H: H for ReLU^2, 2H for SwiGLU.
inline int64_t activation_in_width(Activation a, int64_t hidden) { return a == Activation::SwiGLU ? 2 * hidden : hidden; }

void activation_forward(Activation a, const Tensor& h /*(N, H)*/, const Tensor& pre /*(N, H) or (N, 2H)*/);
// dpre is overwritten.
void activation_backward(Activation a, const Tensor& dpre, const Tensor& dh, const Tensor& pre);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void activation_forward(Activation a, const Tensor& h, const Tensor& pre);
template <typename T>
void activation_backward(Activation a, const Tensor& dpre, const Tensor& dh, const Tensor& pre);
}  // namespace cpu
namespace cuda {
void activation_forward(Activation a, const Tensor& h, const Tensor& pre);
void activation_backward(Activation a, const Tensor& dpre, const Tensor& dh, const Tensor& pre);
}  // namespace cuda
}  // namespace nw
