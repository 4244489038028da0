// CUDA linear layer (fp32) through cuBLAS: y = x W^T, dx = dy W, dW += dy^T x, the same three
// row-major GEMMs as csrc/cpu/linear.cpp.
#include "kernels/common.cuh"
#include "kernels/cublas.cuh"
#include "ops/linear.h"

namespace nw::cuda {

void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w) {
  detail::require_f32("linear_forward", {&y, &x, &w});
  const int N = static_cast<int>(x.size(0)), in = static_cast<int>(x.size(1)), out = static_cast<int>(w.size(0));
  sgemm(false, true, N, out, in, 1.f, x.ptr<float>(), in, w.ptr<float>(), in, 0.f, y.ptr<float>(), out);
}

void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  detail::require_f32("linear_backward", {&dx, &dw, &dy, &x, &w});
  const int N = static_cast<int>(x.size(0)), in = static_cast<int>(x.size(1)), out = static_cast<int>(w.size(0));
  if (dx.defined())  // dx (N, in) = dy (N, out) . W (out, in)
    sgemm(false, false, N, in, out, 1.f, dy.ptr<float>(), out, w.ptr<float>(), in, 0.f, dx.ptr<float>(), in);
  // dW (out, in) += dy^T (out, N) . x (N, in)
  sgemm(true, false, out, in, N, 1.f, dy.ptr<float>(), out, x.ptr<float>(), in, 1.f, dw.ptr<float>(), in);
}

}  // namespace nw::cuda
