// CPU RMSNorm: per-row statistics; the gain gradient is reduced over rows in row order. The row
// functions are shared with the fused residual add + RMSNorm (cpu/residual_rmsnorm.cpp).
#include <algorithm>
#include <cmath>

#include "ops/rmsnorm.h"

namespace nw::cpu {

template <typename T>
T rmsnorm_row_forward(T* yr, const T* xr, const T* wp, int64_t C, float eps) {
  T ss = 0;
  for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
  const T r = T(1) / std::sqrt(ss / T(C) + T(eps));
  if (wp) for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * r * wp[c];
  else for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * r;
  return r;
}

template <typename T>
void rmsnorm_row_backward(T* dr, const T* gr, const T* xr, const T* wp, T r, int64_t C) {
  // dx = r * (g*w - xhat * mean(g*w*xhat)), xhat = x*r
  T dot = 0;
  for (int64_t c = 0; c < C; ++c) dot += gr[c] * (wp ? wp[c] : T(1)) * xr[c];
  const T k = dot * r * r / T(C);
  for (int64_t c = 0; c < C; ++c) dr[c] = r * (gr[c] * (wp ? wp[c] : T(1)) - xr[c] * k);
}

template <typename T>
void rmsnorm_gain_backward(const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& rstd) {
  const int64_t N = x.size(0), C = x.size(1);
  const T* xp = x.ptr<T>();
  const T* gp = dy.ptr<T>();
  const T* rp = rstd.ptr<T>();
  T* dwp = dw.ptr<T>();
  constexpr int64_t kBlock = 32;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
    const int64_t c1 = std::min(C, c0 + kBlock);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) dwp[c] += gp[n * C + c] * xp[n * C + c] * rp[n];
  }
}

template <typename T>
void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w, float eps) {
  const int64_t N = x.size(0), C = x.size(1);
  const T* xp = x.ptr<T>();
  const T* wp = w.defined() ? w.ptr<T>() : nullptr;
  T* yp = y.ptr<T>();
  T* rp = rstd.ptr<T>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) rp[n] = rmsnorm_row_forward(yp + n * C, xp + n * C, wp, C, eps);
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
  for (int64_t n = 0; n < N; ++n) rmsnorm_row_backward(dxp + n * C, gp + n * C, xp + n * C, wp, rp[n], C);
  if (dw.defined()) rmsnorm_gain_backward<T>(dw, dy, x, rstd);
}

#define INSTANTIATE(T)                                                                                       \
  template T rmsnorm_row_forward<T>(T*, const T*, const T*, int64_t, float);                                 \
  template void rmsnorm_row_backward<T>(T*, const T*, const T*, const T*, T, int64_t);                       \
  template void rmsnorm_gain_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&);        \
  template void rmsnorm_forward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float);       \
  template void rmsnorm_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, \
                                    const Tensor&);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
