// Device/dtype dispatch shared by the op files: CUDA tensors go to kernels/, CPU tensors to the
// templated oracle in cpu/ (float32 for training, float64 for gradient checks).
#pragma once
#include "core/precision.h"
#include "core/tensor.h"

namespace nw {
// bf16 precision rounds float32 operands (core/precision.h); float64 (gradient checks) is fp32-only.
inline void check_precision(Precision p, const Tensor& x, const char* op) {
  NW_CHECK(p == Precision::FP32 || x.dtype == DType::F32, op, ": bf16 precision needs float32 tensors, got ",
           dtype_name(x.dtype));
}
}  // namespace nw

#define NW_DISPATCH_CPU(dtype, T, ...)                                                  \
  switch (dtype) {                                                                      \
    case ::nw::DType::F32: { using T = float; __VA_ARGS__; break; }                     \
    case ::nw::DType::F64: { using T = double; __VA_ARGS__; break; }                    \
    default: NW_CHECK(false, "the CPU backend computes in float32 or float64, got ",    \
                      ::nw::dtype_name(dtype));                                         \
  }
