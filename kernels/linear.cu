// CUDA linear layer: y = x W^T, dx = dy W, dW += dy^T x, the same three row-major GEMMs as
// csrc/cpu/linear.cpp. fp32 precision (the reference mode): float32 cuBLAS GEMMs (no TF32). bf16
// precision: the operands are converted to bf16 and the GEMMs run through cuBLASLt on tensor cores with
// float32 accumulation and float32 outputs (dW accumulates into the float32 gradient with beta = 1).
//
// No cuBLASLt epilogue is fused: nanowhale's linear layers have no bias (so no BIAS or BGRAD epilogue),
// SwiGLU multiplies the two halves of the input projection's output, while Lt's activation epilogues
// (ReLU, GELU) map each element on its own, and the logits' softcap (tanh) is applied by the
// cross-entropy kernel, which reads the logits anyway.
#include "kernels/bf16.cuh"
#include "kernels/common.cuh"
#include "kernels/cublas.cuh"
#include "kernels/cublaslt.cuh"
#include "ops/linear.h"

namespace nw::cuda {

void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, Precision p) {
  detail::require_f32("linear_forward", {&y, &x, &w});
  const int N = static_cast<int>(x.size(0)), in = static_cast<int>(x.size(1)), out = static_cast<int>(w.size(0));
  if (p == Precision::BF16) {
    const Bf16Copy xb(x), wb(w);
    gemm_bf16(false, true, N, out, in, 1.f, xb.data(), in, wb.data(), in, 0.f, y.ptr<float>(), out);
    return;
  }
  sgemm(false, true, N, out, in, 1.f, x.ptr<float>(), in, w.ptr<float>(), in, 0.f, y.ptr<float>(), out);
}

void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                     Precision p) {
  detail::require_f32("linear_backward", {&dx, &dw, &dy, &x, &w});
  const int N = static_cast<int>(x.size(0)), in = static_cast<int>(x.size(1)), out = static_cast<int>(w.size(0));
  if (p == Precision::BF16) {
    const Bf16Copy dyb(dy), xb(x);
    if (dx.defined()) {  // dx (N, in) = dy (N, out) . W (out, in)
      const Bf16Copy wb(w);
      gemm_bf16(false, false, N, in, out, 1.f, dyb.data(), out, wb.data(), in, 0.f, dx.ptr<float>(), in);
    }
    // dW (out, in) += dy^T (out, N) . x (N, in)
    gemm_bf16(true, false, out, in, N, 1.f, dyb.data(), out, xb.data(), in, 1.f, dw.ptr<float>(), in);
    return;
  }
  if (dx.defined())  // dx (N, in) = dy (N, out) . W (out, in)
    sgemm(false, false, N, in, out, 1.f, dy.ptr<float>(), out, w.ptr<float>(), in, 0.f, dx.ptr<float>(), in);
  // dW (out, in) += dy^T (out, N) . x (N, in)
  sgemm(true, false, out, in, N, 1.f, dy.ptr<float>(), out, x.ptr<float>(), in, 1.f, dw.ptr<float>(), in);
}

}  // namespace nw::cuda
