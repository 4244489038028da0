// CPU residual add + RMSNorm, row by row with rmsnorm's own row arithmetic (cpu/rmsnorm.cpp): the bits of
// residual_add followed by rmsnorm_forward, and of rmsnorm_backward followed by residual_add.
#include <vector>

#include "ops/residual_rmsnorm.h"
#include "ops/rmsnorm.h"

namespace nw::cpu {

template <typename T>
void residual_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& f, const Tensor& w,
                              float eps) {
  const int64_t N = x.size(0), C = x.size(1);
  T* xp = x.ptr<T>();
  const T* fp = f.ptr<T>();
  const T* wp = w.defined() ? w.ptr<T>() : nullptr;
  T* yp = y.ptr<T>();
  T* rp = rstd.ptr<T>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    T* xr = xp + n * C;
    const T* fr = fp + n * C;
    for (int64_t c = 0; c < C; ++c) xr[c] += fr[c];
    rp[n] = rmsnorm_row_forward(yp + n * C, xr, wp, C, eps);
  }
}

template <typename T>
void residual_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                               const Tensor& rstd) {
  const int64_t N = x.size(0), C = x.size(1);
  const T* wp = w.defined() ? w.ptr<T>() : nullptr;
#pragma omp parallel
  {
    // The norm's row gradient is rounded to T before it is added (as the unfused pair stores it): adding
    // it inside one expression would let the compiler contract the multiply-add and change the bits.
    std::vector<T> dnorm(C);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      rmsnorm_row_backward(dnorm.data(), dy.ptr<T>() + n * C, x.ptr<T>() + n * C, wp, rstd.ptr<T>()[n], C);
      T* dr = dx.ptr<T>() + n * C;
      for (int64_t c = 0; c < C; ++c) dr[c] += dnorm[c];
    }
  }
  if (dw.defined()) rmsnorm_gain_backward<T>(dw, dy, x, rstd);
}

#define INSTANTIATE(T)                                                                                     \
  template void residual_rmsnorm_forward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,     \
                                            const Tensor&, float);                                         \
  template void residual_rmsnorm_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,    \
                                             const Tensor&, const Tensor&);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
