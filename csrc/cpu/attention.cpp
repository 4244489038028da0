// CPU causal attention with GQA and sliding window. The forward stores only the row log-sum-exp;
// the backward recomputes the probabilities. Each backward task owns one (batch, kv-head) pair, so
// dk/dv are reduced in a fixed order without atomics.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/attention.h"

namespace nw::cpu {

namespace {
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
inline int64_t window_start(int64_t t, int window) { return window > 0 ? std::max<int64_t>(0, t - window + 1) : 0; }
}  // namespace

template <typename T>
void attention_forward(const Tensor& y, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                       int window) {
  const int64_t B = q.size(0), Tn = q.size(1), H = q.size(2), D = q.size(3), KVH = k.size(2), G = H / KVH;
  const T scale = T(1) / std::sqrt(T(D));
  const T* qp = q.ptr<T>();
  const T* kp = k.ptr<T>();
  const T* vp = v.ptr<T>();
  T* yp = y.ptr<T>();
  T* lp = lse.ptr<T>();
#pragma omp parallel
  {
    std::vector<T> p(Tn);  // one score row per thread, allocated once per call
#pragma omp for collapse(3) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < Tn; ++t) {
          const int64_t kvh = h / G, s0 = window_start(t, window);
          const T* qr = qp + ((b * Tn + t) * H + h) * D;
          T mx = -std::numeric_limits<T>::infinity();
          for (int64_t s = s0; s <= t; ++s) {
            p[s] = dot(qr, kp + ((b * Tn + s) * KVH + kvh) * D, D) * scale;
            mx = std::max(mx, p[s]);
          }
          T sum = 0;
          T* ps = p.data();
#pragma omp simd reduction(+ : sum)
          for (int64_t s = s0; s <= t; ++s) sum += (ps[s] = std::exp(ps[s] - mx));
          T* yr = yp + ((b * Tn + t) * H + h) * D;
          std::fill_n(yr, D, T(0));
          const T inv = T(1) / sum;
          for (int64_t s = s0; s <= t; ++s) {
            const T* vr = vp + ((b * Tn + s) * KVH + kvh) * D;
            const T ps = p[s] * inv;
            for (int64_t d = 0; d < D; ++d) yr[d] += ps * vr[d];
          }
          lp[(b * H + h) * Tn + t] = mx + std::log(sum);
        }
  }
}

template <typename T>
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dy, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& y, const Tensor& lse, int window) {
  const int64_t B = q.size(0), Tn = q.size(1), H = q.size(2), D = q.size(3), KVH = k.size(2), G = H / KVH;
  const T scale = T(1) / std::sqrt(T(D));
  const T *qp = q.ptr<T>(), *kp = k.ptr<T>(), *vp = v.ptr<T>(), *yp = y.ptr<T>(), *gp = dy.ptr<T>();
  const T* lp = lse.ptr<T>();
  T *dqp = dq.ptr<T>(), *dkp = dk.ptr<T>(), *dvp = dv.ptr<T>();
#pragma omp parallel
  {
  std::vector<T> p(Tn);  // probabilities of one query row
#pragma omp for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t kvh = 0; kvh < KVH; ++kvh) {
      for (int64_t s = 0; s < Tn; ++s) {
        std::fill_n(dkp + ((b * Tn + s) * KVH + kvh) * D, D, T(0));
        std::fill_n(dvp + ((b * Tn + s) * KVH + kvh) * D, D, T(0));
      }
      for (int64_t h = kvh * G; h < (kvh + 1) * G; ++h)
        for (int64_t t = 0; t < Tn; ++t) {
          const int64_t row = (b * Tn + t) * H + h, s0 = window_start(t, window);
          const T *qr = qp + row * D, *gr = gp + row * D;
          T* dqr = dqp + row * D;
          std::fill_n(dqr, D, T(0));
          const T l = lp[(b * H + h) * Tn + t];
          const T delta = dot(gr, yp + row * D, D);  // sum_s p_s dp_s
          T* ps = p.data();
          for (int64_t s = s0; s <= t; ++s) ps[s] = dot(qr, kp + ((b * Tn + s) * KVH + kvh) * D, D) * scale - l;
#pragma omp simd
          for (int64_t s = s0; s <= t; ++s) ps[s] = std::exp(ps[s]);
          for (int64_t s = s0; s <= t; ++s) {
            const int64_t kv = ((b * Tn + s) * KVH + kvh) * D;
            const T ds = ps[s] * (dot(gr, vp + kv, D) - delta) * scale;
            T *dkr = dkp + kv, *dvr = dvp + kv;
            const T* kr = kp + kv;
            for (int64_t d = 0; d < D; ++d) {
              dqr[d] += ds * kr[d];
              dkr[d] += ds * qr[d];
              dvr[d] += ps[s] * gr[d];
            }
          }
        }
    }
  }
}

#define INSTANTIATE(T)                                                                                           \
  template void attention_forward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int); \
  template void attention_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,      \
                                      const Tensor&, const Tensor&, const Tensor&, const Tensor&, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
