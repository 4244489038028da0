// CPU grouped expert matmul: one GEMM per non-empty expert over its contiguous rows. In bf16 precision
// the GEMMs read operands rounded to bf16 and accumulate in float32.
#include "cpu/bf16_operands.h"
#include "cpu/blas.h"
#include "ops/grouped_linear.h"

namespace nw::cpu {

template <typename T>
void grouped_linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& offsets, Precision p) {
  const int E = static_cast<int>(w.size(0)), out = static_cast<int>(w.size(1)), in = static_cast<int>(w.size(2));
  const int32_t* off = offsets.ptr<int32_t>();
  const T* xp = bf16_operand(x.ptr<T>(), x.numel(), p, 0);
  const T* wp = bf16_operand(w.ptr<T>(), w.numel(), p, 1);
  for (int e = 0; e < E; ++e) {
    const int rows = off[e + 1] - off[e];
    if (rows == 0) continue;
    gemm<T>(false, true, rows, out, in, T(1), xp + int64_t(off[e]) * in, in, wp + int64_t(e) * out * in, in, T(0),
            y.ptr<T>() + int64_t(off[e]) * out, out);
  }
}

template <typename T>
void grouped_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                             const Tensor& w, const Tensor& offsets, Precision p) {
  const int E = static_cast<int>(w.size(0)), out = static_cast<int>(w.size(1)), in = static_cast<int>(w.size(2));
  const int32_t* off = offsets.ptr<int32_t>();
  const T* dyp = bf16_operand(dy.ptr<T>(), dy.numel(), p, 0);
  const T* xp = bf16_operand(x.ptr<T>(), x.numel(), p, 1);
  const T* wp = dx.defined() ? bf16_operand(w.ptr<T>(), w.numel(), p, 2) : nullptr;
  for (int e = 0; e < E; ++e) {
    const int rows = off[e + 1] - off[e];
    if (rows == 0) continue;
    const T* dye = dyp + int64_t(off[e]) * out;
    if (dx.defined())
      gemm<T>(false, false, rows, in, out, T(1), dye, out, wp + int64_t(e) * out * in, in, T(0),
              dx.ptr<T>() + int64_t(off[e]) * in, in);
    gemm<T>(true, false, out, in, rows, T(1), dye, out, xp + int64_t(off[e]) * in, in, T(1),
            dw.ptr<T>() + int64_t(e) * out * in, in);
  }
}

#define INSTANTIATE(T)                                                                                   \
  template void grouped_linear_forward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,    \
                                          Precision);                                                   \
  template void grouped_linear_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,   \
                                           const Tensor&, const Tensor&, Precision);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
