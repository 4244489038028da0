// CPU soft-capped cross-entropy, one row per task: the capped row is computed once into a scratch
// row, so dlogits may overwrite the logits.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cross_entropy.h"

namespace nw::cpu {

template <typename T>
void softcap_cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                           const Tensor& targets, float cap, float grad_per_token) {
  const int64_t N = logits.size(0), V = logits.size(1);
  const T* zp = logits.ptr<T>();
  T* dp = dlogits.defined() ? dlogits.ptr<T>() : nullptr;
  T* lp = losses.ptr<T>();
  const int32_t* tp = targets.ptr<int32_t>();
  const T c = T(cap);
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
      T mx = -std::numeric_limits<T>::infinity();
      for (int64_t v = 0; v < V; ++v) {
        row[v] = c > 0 ? c * std::tanh(z[v] / c) : z[v];
        mx = std::max(mx, row[v]);
      }
      T sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - mx);
      const T lse = mx + std::log(sum);
      lp[n] = lse - row[tgt];
      if (!dp) continue;
      T* d = dp + n * V;
      const T g = T(grad_per_token);
      for (int64_t v = 0; v < V; ++v) {
        T dc = std::exp(row[v] - lse) - (v == tgt ? T(1) : T(0));
        if (c > 0) dc *= T(1) - (row[v] / c) * (row[v] / c);  // d(c tanh(z/c))/dz = 1 - tanh^2
        d[v] = dc * g;
      }
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
  for (int64_t i = 0; i < n; ++i) z[i] = c * std::tanh(z[i] / c);
}

#define INSTANTIATE(T)                                                                                         \
  template void softcap_cross_entropy<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float, float); \
  template void softcap<T>(const Tensor&, float);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
