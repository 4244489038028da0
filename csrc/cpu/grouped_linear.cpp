// CPU grouped expert matmul: one GEMM per non-empty expert over its contiguous rows.
#include "cpu/blas.h"
#include "ops/grouped_linear.h"

namespace nw::cpu {

template <typename T>
void grouped_linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& offsets) {
  const int E = static_cast<int>(w.size(0)), out = static_cast<int>(w.size(1)), in = static_cast<int>(w.size(2));
  const int32_t* off = offsets.ptr<int32_t>();
  for (int e = 0; e < E; ++e) {
    const int rows = off[e + 1] - off[e];
    if (rows == 0) continue;
    gemm<T>(false, true, rows, out, in, T(1), x.ptr<T>() + int64_t(off[e]) * in, in,
            w.ptr<T>() + int64_t(e) * out * in, in, T(0), y.ptr<T>() + int64_t(off[e]) * out, out);
  }
}

template <typename T>
void grouped_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                             const Tensor& w, const Tensor& offsets) {
  const int E = static_cast<int>(w.size(0)), out = static_cast<int>(w.size(1)), in = static_cast<int>(w.size(2));
  const int32_t* off = offsets.ptr<int32_t>();
  for (int e = 0; e < E; ++e) {
    const int rows = off[e + 1] - off[e];
    if (rows == 0) continue;
    const T* dye = dy.ptr<T>() + int64_t(off[e]) * out;
    const T* we = w.ptr<T>() + int64_t(e) * out * in;
    if (dx.defined()) gemm<T>(false, false, rows, in, out, T(1), dye, out, we, in, T(0), dx.ptr<T>() + int64_t(off[e]) * in, in);
    gemm<T>(true, false, out, in, rows, T(1), dye, out, x.ptr<T>() + int64_t(off[e]) * in, in, T(1),
            dw.ptr<T>() + int64_t(e) * out * in, in);
  }
}

#define INSTANTIATE(T)                                                                                   \
  template void grouped_linear_forward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&);   \
  template void grouped_linear_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,   \
                                           const Tensor&, const Tensor&);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
