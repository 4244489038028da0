// Token embedding: out[n] = table[tokens[n]].
#pragma once
#include "core/tensor.h"

namespace nw {
void embedding_forward(const Tensor& out /*(N, C)*/, const Tensor& table /*(V, C)*/, const Tensor& tokens /*(N) i32*/);
// dtable[tokens[n]] += dout[n], in token order (deterministic).
void embedding_backward(const Tensor& dtable /*(V, C)*/, const Tensor& dout /*(N, C)*/, const Tensor& tokens);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens);
template <typename T>
void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& tokens);
}  // namespace cpu
namespace cuda {
void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens);
void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& tokens);
}  // namespace cuda
}  // namespace nw
