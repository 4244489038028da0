// Rotary position embedding, in place, rotating the pairs (i, i + D/2) of each head by angle
// t * base^(-2i/D). The backward is the inverse rotation of the gradient.
#pragma once
#include "core/tensor.h"

namespace nw {
// cos, sin: (T, D/2) tables built by rope_tables.
void rope_forward(const Tensor& x /*(B, T, H, D)*/, const Tensor& cos, const Tensor& sin);
void rope_backward(const Tensor& dx /*(B, T, H, D)*/, const Tensor& cos, const Tensor& sin);
void rope_tables(const Tensor& cos /*(T, D/2)*/, const Tensor& sin, double base);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin);
template <typename T>
void rope_backward(const Tensor& dx, const Tensor& cos, const Tensor& sin);
template <typename T>
void rope_tables(const Tensor& cos, const Tensor& sin, double base);
}  // namespace cpu
namespace cuda {
void rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin);
void rope_backward(const Tensor& dx, const Tensor& cos, const Tensor& sin);
void rope_tables(const Tensor& cos, const Tensor& sin, double base);
}  // namespace cuda
}  // namespace nw
