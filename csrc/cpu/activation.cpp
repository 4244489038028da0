// CPU MLP activations: ReLU^2 and SwiGLU.
#include <cmath>

#include "ops/activation.h"

namespace nw::cpu {

template <typename T>
void activation_forward(Activation a, const Tensor& h, const Tensor& pre) {
  const int64_t N = h.size(0), H = h.size(1);
  T* hp = h.ptr<T>();
  const T* xp = pre.ptr<T>();
  if (a == Activation::ReLU2) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N * H; ++i) {
      const T r = xp[i] > T(0) ? xp[i] : T(0);
      hp[i] = r * r;
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < H; ++j) {
      const T g = xp[n * 2 * H + j], u = xp[n * 2 * H + H + j];
      hp[n * H + j] = g / (T(1) + std::exp(-g)) * u;
    }
}

template <typename T>
void activation_backward(Activation a, const Tensor& dpre, const Tensor& dh, const Tensor& pre) {
  const int64_t N = dh.size(0), H = dh.size(1);
  T* dp = dpre.ptr<T>();
  const T* gp = dh.ptr<T>();
  const T* xp = pre.ptr<T>();
  if (a == Activation::ReLU2) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N * H; ++i) dp[i] = xp[i] > T(0) ? T(2) * xp[i] * gp[i] : T(0);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < H; ++j) {
      const T g = xp[n * 2 * H + j], u = xp[n * 2 * H + H + j], d = gp[n * H + j];
      const T sig = T(1) / (T(1) + std::exp(-g));
      dp[n * 2 * H + j] = d * u * sig * (T(1) + g * (T(1) - sig));  // d silu(g)/dg = sig * (1 + g (1 - sig))
      dp[n * 2 * H + H + j] = d * g * sig;
    }
}

#define INSTANTIATE(T)                                                                          \
  template void activation_forward<T>(Activation, const Tensor&, const Tensor&);                \
  template void activation_backward<T>(Activation, const Tensor&, const Tensor&, const Tensor&);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
