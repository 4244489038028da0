// CPU MoE dispatch: counting sort of (token, slot) pairs by expert, gather, and the ordered combine.
#include <algorithm>
#include <vector>

#include "ops/moe_dispatch.h"

namespace nw::cpu {

void moe_dispatch(const Tensor& counts, const Tensor& offsets, const Tensor& row_of_slot,
                  const Tensor& token_of_row, const Tensor& topk) {
  const int64_t N = topk.size(0), K = topk.size(1), E = counts.size(0);
  const int32_t* ip = topk.ptr<int32_t>();
  int32_t* cp = counts.ptr<int32_t>();
  int32_t* op = offsets.ptr<int32_t>();
  int32_t* rp = row_of_slot.ptr<int32_t>();
  int32_t* tp = token_of_row.ptr<int32_t>();
  std::fill_n(cp, E, 0);
  for (int64_t p = 0; p < N * K; ++p) cp[ip[p]] += 1;  // histogram
  op[0] = 0;
  for (int64_t e = 0; e < E; ++e) op[e + 1] = op[e] + cp[e];  // exclusive scan
  std::vector<int32_t> cursor(op, op + E);
  for (int64_t p = 0; p < N * K; ++p) {  // stable: pairs keep token order within an expert
    const int32_t r = cursor[ip[p]]++;
    rp[p] = r;
    tp[r] = static_cast<int32_t>(p / K);
  }
}

template <typename T>
void moe_gather(const Tensor& xe, const Tensor& x, const Tensor& token_of_row) {
  const int64_t R = xe.size(0), C = xe.size(1);
  const T* xp = x.ptr<T>();
  T* ep = xe.ptr<T>();
  const int32_t* tp = token_of_row.ptr<int32_t>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r) std::copy_n(xp + tp[r] * C, C, ep + r * C);
}

template <typename T>
void moe_gather_backward(const Tensor& dx, const Tensor& dxe, const Tensor& row_of_slot) {
  const int64_t N = dx.size(0), C = dx.size(1), K = row_of_slot.size(0) / N;
  T* dp = dx.ptr<T>();
  const T* ep = dxe.ptr<T>();
  const int32_t* rp = row_of_slot.ptr<int32_t>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const T* src = ep + static_cast<int64_t>(rp[n * K + k]) * C;
      for (int64_t c = 0; c < C; ++c) dp[n * C + c] += src[c];
    }
}

template <typename T>
void moe_combine(const Tensor& y, const Tensor& ye, const Tensor& gates, const Tensor& row_of_slot) {
  const int64_t N = y.size(0), C = y.size(1), K = gates.size(1);
  T* yp = y.ptr<T>();
  const T* ep = ye.ptr<T>();
  const T* gp = gates.ptr<T>();
  const int32_t* rp = row_of_slot.ptr<int32_t>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    T* out = yp + n * C;
    std::fill_n(out, C, T(0));
    for (int64_t k = 0; k < K; ++k) {
      const T g = gp[n * K + k];
      const T* src = ep + static_cast<int64_t>(rp[n * K + k]) * C;
      for (int64_t c = 0; c < C; ++c) out[c] += g * src[c];
    }
  }
}

template <typename T>
void moe_combine_backward(const Tensor& dye, const Tensor& dgates, const Tensor& dy, const Tensor& ye,
                          const Tensor& gates, const Tensor& row_of_slot) {
  const int64_t N = dy.size(0), C = dy.size(1), K = gates.size(1);
  T* dep = dye.ptr<T>();
  T* dgp = dgates.ptr<T>();
  const T* gp = gates.ptr<T>();
  const T* yp = dy.ptr<T>();
  const T* ep = ye.ptr<T>();
  const int32_t* rp = row_of_slot.ptr<int32_t>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t r = rp[n * K + k];
      const T g = gp[n * K + k];
      const T* d = yp + n * C;
      const T* e = ep + r * C;
      T* out = dep + r * C;
      T acc = 0;
      for (int64_t c = 0; c < C; ++c) {
        out[c] = g * d[c];
        acc += d[c] * e[c];
      }
      dgp[n * K + k] = acc;
    }
}

#define INSTANTIATE(T)                                                                                         \
  template void moe_gather<T>(const Tensor&, const Tensor&, const Tensor&);                                    \
  template void moe_gather_backward<T>(const Tensor&, const Tensor&, const Tensor&);                           \
  template void moe_combine<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&);                    \
  template void moe_combine_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, \
                                        const Tensor&);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
