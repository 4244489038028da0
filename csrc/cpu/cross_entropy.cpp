// CPU soft-capped cross-entropy, one row per task: the capped row is computed once into a scratch
// row, so dlogits may overwrite the logits.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/fast_math.h"
#include "ops/cross_entropy.h"

namespace nw::cpu {

template <typename T>
void softcap_cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                           const Tensor& targets, const Tensor& weights, float cap, const Tensor& grad_per_token) {
  const int64_t N = logits.size(0), V = logits.size(1);
  const T* zp = logits.ptr<T>();
  T* dp = dlogits.defined() ? dlogits.ptr<T>() : nullptr;
  T* lp = losses.ptr<T>();
  const int32_t* tp = targets.ptr<int32_t>();
  const T* wp = weights.defined() ? weights.ptr<T>() : nullptr;
  const T c = T(cap), g_all = dp ? grad_per_token.ptr<T>()[0] : T(0);
#pragma omp parallel
  {
    std::vector<T> row(V);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const T* z = zp + n * V;
      const int32_t tgt = tp[n];
      if (tgt < 0) {
        lp[n] = 0;
        if (dp) std::fill_n(dp + n * V, V, T(0));
        continue;
      }
      T* r = row.data();
      if (c > 0) {
#pragma omp simd
        for (int64_t v = 0; v < V; ++v) r[v] = c * tanh_fast(z[v] / c);
      } else {
        std::copy_n(z, V, r);
      }
      T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, r[v]);
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t v = 0; v < V; ++v) sum += exp_fast(r[v] - mx);
      const T lse = mx + std::log(sum);
      lp[n] = lse - r[tgt];
      if (!dp) continue;
      T* d = dp + n * V;
      const T g = g_all * (wp ? wp[n] : T(1));
      if (c > 0) {
        const T inv_c2 = T(1) / (c * c);
#pragma omp simd
        for (int64_t v = 0; v < V; ++v) d[v] = exp_fast(r[v] - lse) * (T(1) - r[v] * r[v] * inv_c2) * g;
      } else {
#pragma omp simd
        for (int64_t v = 0; v < V; ++v) d[v] = exp_fast(r[v] - lse) * g;
      }
      // the one-hot term: d(-c_t)/dz_t = -(1 - tanh^2)
      d[tgt] -= (c > 0 ? T(1) - r[tgt] * r[tgt] / (c * c) : T(1)) * g;
    }
  }
}

template <typename T>
void softcap(const Tensor& logits, float cap) {
  if (cap <= 0) return;
  const int64_t n = logits.numel();
  T* z = logits.ptr<T>();
  const T c = T(cap);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) z[i] = c * tanh_fast(z[i] / c);
}

#define INSTANTIATE(T)                                                                                         \
  template void softcap_cross_entropy<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, \
                                         float, const Tensor&);                                                \
  template void softcap<T>(const Tensor&, float);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
