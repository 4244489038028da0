// CPU MoE router: sigmoid scores, biased top-k selection with lowest-index ties, renormalised gates,
// and the sequence-wise balance loss. Work is split by sequence; every sum has a fixed order. moe_route is
// the router then the counting-sort dispatch (cpu/moe_dispatch.cpp): the oracle of the fused CUDA chain.
#include <cmath>
#include <vector>

#include "ops/moe_dispatch.h"
#include "ops/moe_router.h"

namespace nw::cpu {

namespace {
// f_i = E/(K T) * (tokens of the sequence choosing i), for one sequence of T tokens.
template <typename T>
void sequence_fractions(std::vector<T>& f, const int32_t* topk, int64_t Tn, int64_t E, int64_t K) {
  std::fill(f.begin(), f.end(), T(0));
  for (int64_t i = 0; i < Tn * K; ++i) f[topk[i]] += T(1);
  for (auto& x : f) x *= T(E) / T(K * Tn);
}
}  // namespace

template <typename T>
double moe_router_forward(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& logits,
                          const Tensor& bias, int batch, float route_scale, float balance_alpha) {
  const int64_t N = logits.size(0), E = logits.size(1), K = topk.size(1), Tn = N / batch;
  const T* zp = logits.ptr<T>();
  const T* bp = bias.ptr<T>();
  T* sp = scores.ptr<T>();
  T* gp = gates.ptr<T>();
  int32_t* ip = topk.ptr<int32_t>();
  std::vector<double> seq_loss(batch);
#pragma omp parallel
  {
    std::vector<char> taken(E);
    std::vector<T> f(E), P(E);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      std::fill(P.begin(), P.end(), T(0));
      for (int64_t n = b * Tn; n < (b + 1) * Tn; ++n) {
        T* s = sp + n * E;
        T total = 0;
        for (int64_t e = 0; e < E; ++e) total += (s[e] = T(1) / (T(1) + std::exp(-zp[n * E + e])));
        for (int64_t e = 0; e < E; ++e) P[e] += s[e] / total;
        // Top-k of s + bias; a strict '>' keeps the lowest index among equals.
        std::fill(taken.begin(), taken.end(), 0);
        T chosen_sum = 0;
        for (int64_t j = 0; j < K; ++j) {
          int64_t best = -1;
          for (int64_t e = 0; e < E; ++e)
            if (!taken[e] && (best < 0 || s[e] + bp[e] > s[best] + bp[best])) best = e;
          taken[best] = 1;
          ip[n * K + j] = static_cast<int32_t>(best);
          chosen_sum += s[best];
        }
        for (int64_t j = 0; j < K; ++j) gp[n * K + j] = s[ip[n * K + j]] / chosen_sum * T(route_scale);
      }
      sequence_fractions(f, ip + b * Tn * K, Tn, E, K);
      double l = 0;
      for (int64_t e = 0; e < E; ++e) l += static_cast<double>(f[e]) * static_cast<double>(P[e] / T(Tn));
      seq_loss[b] = l;
    }
  }
  double loss = 0;
  for (double l : seq_loss) loss += l;
  return balance_alpha * loss / batch;
}

template <typename T>
void moe_route(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& counts,
               const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row, const Tensor& balance,
               const Tensor& logits, const Tensor& bias, int batch, float route_scale, float balance_alpha) {
  balance.ptr<double>()[0] +=
      moe_router_forward<T>(scores, topk, gates, logits, bias, batch, route_scale, balance_alpha);
  cpu::moe_dispatch(counts, offsets, row_of_slot, token_of_row, topk);
}

template <typename T>
void moe_router_backward(const Tensor& dlogits, const Tensor& dgates, const Tensor& scores, const Tensor& topk,
                         int batch, float route_scale, float balance_alpha, const Tensor& grad_scale) {
  const int64_t N = scores.size(0), E = scores.size(1), K = topk.size(1), Tn = N / batch;
  const T* sp = scores.ptr<T>();
  const T* dgp = dgates.ptr<T>();
  const int32_t* ip = topk.ptr<int32_t>();
  T* dp = dlogits.ptr<T>();
  // d(balance)/d s_{t,i} = c * (f_i / S_t - sum_j f_j s_{t,j} / S_t^2), c = alpha / (B T) * grad_scale
  const T c = T(balance_alpha) * grad_scale.ptr<T>()[0] / T(batch * Tn);
#pragma omp parallel
  {
    std::vector<T> f(E);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      sequence_fractions(f, ip + b * Tn * K, Tn, E, K);
      for (int64_t n = b * Tn; n < (b + 1) * Tn; ++n) {
        const T* s = sp + n * E;
        T* d = dp + n * E;
        T total = 0, fs = 0;
        for (int64_t e = 0; e < E; ++e) {
          total += s[e];
          fs += f[e] * s[e];
        }
        for (int64_t e = 0; e < E; ++e) d[e] = c * (f[e] / total - fs / (total * total));
        // gates g_j = rs * s_j / S_sel  =>  ds_j = rs / S_sel * (dg_j - sum_i dg_i s_i / S_sel)
        T chosen_sum = 0, weighted = 0;
        for (int64_t j = 0; j < K; ++j) {
          chosen_sum += s[ip[n * K + j]];
          weighted += dgp[n * K + j] * s[ip[n * K + j]];
        }
        for (int64_t j = 0; j < K; ++j)
          d[ip[n * K + j]] += T(route_scale) / chosen_sum * (dgp[n * K + j] - weighted / chosen_sum);
        for (int64_t e = 0; e < E; ++e) d[e] *= s[e] * (T(1) - s[e]);  // through the sigmoid
      }
    }
  }
}

template <typename T>
void moe_update_bias(const Tensor& bias, const Tensor& counts, float gamma) {
  const int64_t E = bias.size(0);
  T* bp = bias.ptr<T>();
  const int64_t* cp = counts.ptr<int64_t>();
  double mean = 0;
  for (int64_t e = 0; e < E; ++e) mean += static_cast<double>(cp[e]);
  mean /= static_cast<double>(E);
  for (int64_t e = 0; e < E; ++e) {
    const double gap = mean - static_cast<double>(cp[e]);
    bp[e] += T(gamma) * T((gap > 0) - (gap < 0));
  }
}

void moe_accumulate_counts(const Tensor& total, const Tensor& counts) {
  int64_t* t = total.ptr<int64_t>();
  const int32_t* c = counts.ptr<int32_t>();
  for (int64_t e = 0; e < total.size(0); ++e) t[e] += c[e];
}

#define INSTANTIATE(T)                                                                                          \
  template double moe_router_forward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, \
                                        int, float, float);                                                     \
  template void moe_route<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,         \
                             const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int,    \
                             float, float);                                                                     \
  template void moe_router_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int, float,  \
                                       float, const Tensor&);                                                           \
  template void moe_update_bias<T>(const Tensor&, const Tensor&, float);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
