// CPU RMSNorm: per-row statistics; the gain gradient is reduced over rows in row order.
#include <algorithm>
#include <cmath>

#include "ops/rmsnorm.h"

namespace nw::cpu {

template <typename T>
void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w, float eps) {
  const int64_t N = x.size(0), C = x.size(1);
  const T* xp = x.ptr<T>();
  const T* wp = w.defined() ? w.ptr<T>() : nullptr;
  T* yp = y.ptr<T>();
  T* rp = rstd.ptr<T>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = xp + n * C;
    T* yr = yp + n * C;
    T ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
    const T r = T(1) / std::sqrt(ss / T(C) + T(eps));
    rp[n] = r;
    if (wp) for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * r * wp[c];
    else for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * r;
  }
}

template <typename T>
void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                      const Tensor& rstd) {
  const int64_t N = x.size(0), C = x.size(1);
  const T* xp = x.ptr<T>();
  const T* wp = w.defined() ? w.ptr<T>() : nullptr;
  const T* gp = dy.ptr<T>();
  const T* rp = rstd.ptr<T>();
  T* dxp = dx.ptr<T>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = xp + n * C;
    const T* gr = gp + n * C;
    T* dr = dxp + n * C;
    const T r = rp[n];
    // dx = r * (g*w - xhat * mean(g*w*xhat)), xhat = x*r
    T dot = 0;
    for (int64_t c = 0; c < C; ++c) dot += gr[c] * (wp ? wp[c] : T(1)) * xr[c];
    const T k = dot * r * r / T(C);
    for (int64_t c = 0; c < C; ++c) dr[c] = r * (gr[c] * (wp ? wp[c] : T(1)) - xr[c] * k);
  }
  if (!dw.defined()) return;
  T* dwp = dw.ptr<T>();
  constexpr int64_t kBlock = 32;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
    const int64_t c1 = std::min(C, c0 + kBlock);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) dwp[c] += gp[n * C + c] * xp[n * C + c] * rp[n];
  }
}

#define INSTANTIATE(T)                                                                                       \
  template void rmsnorm_forward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float);       \
  template void rmsnorm_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, \
                                    const Tensor&);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
