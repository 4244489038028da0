// CPU embedding lookup and its scatter-add backward.
#include <algorithm>

#include "ops/embedding.h"

namespace nw::cpu {

template <typename T>
void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) {
  const int64_t N = out.size(0), C = out.size(1);
  T* o = out.ptr<T>();
  const T* w = table.ptr<T>();
  const int32_t* tok = tokens.ptr<int32_t>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) std::copy_n(w + tok[n] * C, C, o + n * C);
}

template <typename T>
void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& tokens) {
  const int64_t N = dout.size(0), C = dout.size(1);
  T* dw = dtable.ptr<T>();
  const T* d = dout.ptr<T>();
  const int32_t* tok = tokens.ptr<int32_t>();
  // Threads own column blocks and visit tokens in order: no races, same sums for any thread count.
  constexpr int64_t kBlock = 32;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
    const int64_t c1 = std::min(C, c0 + kBlock);
    for (int64_t n = 0; n < N; ++n) {
      T* row = dw + tok[n] * C;
      const T* g = d + n * C;
      for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

#define INSTANTIATE(T)                                                                         \
  template void embedding_forward<T>(const Tensor&, const Tensor&, const Tensor&);            \
  template void embedding_backward<T>(const Tensor&, const Tensor&, const Tensor&);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
