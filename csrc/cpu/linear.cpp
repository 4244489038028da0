// CPU linear layer: three GEMMs through OpenBLAS.
#include "cpu/blas.h"
#include "ops/linear.h"

namespace nw::cpu {

template <typename T>
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w) {
  const int N = static_cast<int>(x.size(0)), in = static_cast<int>(x.size(1)), out = static_cast<int>(w.size(0));
  gemm<T>(false, true, N, out, in, T(1), x.ptr<T>(), in, w.ptr<T>(), in, T(0), y.ptr<T>(), out);
}

template <typename T>
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  const int N = static_cast<int>(x.size(0)), in = static_cast<int>(x.size(1)), out = static_cast<int>(w.size(0));
  if (dx.defined())  // dx (N, in) = dy (N, out) · W (out, in)
    gemm<T>(false, false, N, in, out, T(1), dy.ptr<T>(), out, w.ptr<T>(), in, T(0), dx.ptr<T>(), in);
  // dW (out, in) += dy^T (out, N) · x (N, in)
  gemm<T>(true, false, out, in, N, T(1), dy.ptr<T>(), out, x.ptr<T>(), in, T(1), dw.ptr<T>(), in);
}

#define INSTANTIATE(T)                                                                                   \
  template void linear_forward<T>(const Tensor&, const Tensor&, const Tensor&);                          \
  template void linear_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
