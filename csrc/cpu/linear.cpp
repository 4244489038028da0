// CPU linear layer: three GEMMs through OpenBLAS. In bf16 precision the GEMMs read operands rounded to
// bf16 and accumulate in float32 (the emulation of cuBLASLt's bf16 GEMMs).
#include "cpu/bf16_operands.h"
#include "cpu/blas.h"
#include "ops/linear.h"

namespace nw::cpu {

template <typename T>
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, Precision p) {
  const int N = static_cast<int>(x.size(0)), in = static_cast<int>(x.size(1)), out = static_cast<int>(w.size(0));
  const T* xp = bf16_operand(x.ptr<T>(), x.numel(), p, 0);
  const T* wp = bf16_operand(w.ptr<T>(), w.numel(), p, 1);
  gemm<T>(false, true, N, out, in, T(1), xp, in, wp, in, T(0), y.ptr<T>(), out);
}

template <typename T>
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                     Precision p) {
  const int N = static_cast<int>(x.size(0)), in = static_cast<int>(x.size(1)), out = static_cast<int>(w.size(0));
  const T* dyp = bf16_operand(dy.ptr<T>(), dy.numel(), p, 0);
  if (dx.defined())  // dx (N, in) = dy (N, out) · W (out, in)
    gemm<T>(false, false, N, in, out, T(1), dyp, out, bf16_operand(w.ptr<T>(), w.numel(), p, 1), in, T(0),
            dx.ptr<T>(), in);
  // dW (out, in) += dy^T (out, N) · x (N, in)
  gemm<T>(true, false, out, in, N, T(1), dyp, out, bf16_operand(x.ptr<T>(), x.numel(), p, 2), in, T(1),
          dw.ptr<T>(), in);
}

#define INSTANTIATE(T)                                                                                   \
  template void linear_forward<T>(const Tensor&, const Tensor&, const Tensor&, Precision);               \
  template void linear_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, \
                                   Precision);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
