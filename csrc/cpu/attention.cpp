// CPU causal attention with GQA and sliding window. Each task takes one (batch, head) pair and runs
// the score and value products as GEMMs over a (Tq, Tk) scratch matrix; the mask is applied in the
// softmax. With a KV cache the queries are the last Tq of Tk positions. The forward keeps only the row log-sum-exp; the backward recomputes the probabilities.
// Backward tasks own a (batch, kv-head) pair, so dK/dV are summed over the group's query heads in a
// fixed order without atomics.
// In bf16 precision every product reads bf16 operands and accumulates in float32, as a tensor-core
// kernel does: q, k, v and dy are rounded on entry, the probabilities P before P V and P^T dY, and dS
// before dS K and dS^T Q; the softmax statistics, lse and delta stay float32.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/bf16_operands.h"
#include "cpu/blas.h"
#include "cpu/fast_math.h"
#include "ops/attention.h"

namespace nw::cpu {

namespace {
// Keys visible from the query at position p: [first_key(p), p].
inline int64_t first_key(int64_t p, int window) { return window > 0 ? std::max<int64_t>(0, p - window + 1) : 0; }

// Shapes of one call. Queries are the last Tq of Tk positions; k and v hold Tcap rows per sequence.
struct Dims {
  int64_t B, Tq, Tk, Tcap, H, D, KVH, G;
  Dims(const Tensor& q, const Tensor& k, int64_t kv_len)
      : B(q.size(0)), Tq(q.size(1)), Tk(kv_len), Tcap(k.size(1)), H(q.size(2)), D(q.size(3)), KVH(k.size(2)),
        G(q.size(2) / k.size(2)) {}
  int64_t q_offset(int64_t b, int64_t h) const { return b * Tq * H * D + h * D; }          // row t at + t*H*D
  int64_t kv_offset(int64_t b, int64_t kvh) const { return b * Tcap * KVH * D + kvh * D; }  // row s at + s*KVH*D
};

// S (Tq, Tk) = scale * Q_bh K_b,kv^T: the scores of every (query, key) pair.
template <typename T>
void scores(T* S, const T* q, const T* k, const Dims& d, T scale) {
  gemm<T>(false, true, int(d.Tq), int(d.Tk), int(d.D), scale, q, int(d.H * d.D), k, int(d.KVH * d.D), T(0), S,
          int(d.Tk));
}

// Forward for every (batch, head): y = softmax(masked S) V; lse (B, H, Tq) if given.
template <typename T>
void attend(const Tensor& y, T* lse, const Tensor& q, const Tensor& k, const Tensor& v, const Dims& d, int window,
            Precision prec) {
  const T scale = T(1) / std::sqrt(T(d.D));
  const T* qp = bf16_operand(q.ptr<T>(), q.numel(), prec, 0);
  const T* kp = bf16_operand(k.ptr<T>(), k.numel(), prec, 1);
  const T* vp = bf16_operand(v.ptr<T>(), v.numel(), prec, 2);
  T* yp = y.ptr<T>();
#pragma omp parallel
  {
    std::vector<T> buf(d.Tq * d.Tk);  // scores, then probabilities
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        T* P = buf.data();
        const int64_t qo = d.q_offset(b, h), kvo = d.kv_offset(b, h / d.G);
        scores(P, qp + qo, kp + kvo, d, scale);
        for (int64_t t = 0; t < d.Tq; ++t) {
          T* row = P + t * d.Tk;
          const int64_t pos = d.Tk - d.Tq + t, s0 = first_key(pos, window);
          T mx = -std::numeric_limits<T>::infinity();
          for (int64_t s = s0; s <= pos; ++s) mx = std::max(mx, row[s]);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t s = s0; s <= pos; ++s) sum += (row[s] = exp_fast(row[s] - mx));
          const T inv = T(1) / sum;
          for (int64_t s = 0; s < d.Tk; ++s) row[s] = (s >= s0 && s <= pos) ? row[s] * inv : T(0);
          if (lse) lse[(b * d.H + h) * d.Tq + t] = mx + std::log(sum);
        }
        round_block_to_bf16(P, d.Tq, d.Tk, d.Tk, prec);
        // Y_bh (Tq, D) = P V
        gemm<T>(false, false, int(d.Tq), int(d.D), int(d.Tk), T(1), P, int(d.Tk), vp + kvo, int(d.KVH * d.D), T(0),
                yp + qo, int(d.H * d.D));
      }
  }
}
}  // namespace

template <typename T>
void attention_forward(const Tensor& y, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                       int window, Precision p) {
  attend<T>(y, lse.ptr<T>(), q, k, v, Dims(q, k, k.size(1)), window, p);
}

template <typename T>
void attention_forward_kv(const Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v, int64_t kv_len,
                          int window, Precision p) {
  attend<T>(y, nullptr, q, k, v, Dims(q, k, kv_len), window, p);
}

template <typename T>
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dy, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& y, const Tensor& lse, int window,
                        Precision prec) {
  const Dims d(q, k, k.size(1));  // training: Tq == Tk == Tcap
  const T scale = T(1) / std::sqrt(T(d.D));
  const T* qp = bf16_operand(q.ptr<T>(), q.numel(), prec, 0);
  const T* kp = bf16_operand(k.ptr<T>(), k.numel(), prec, 1);
  const T* vp = bf16_operand(v.ptr<T>(), v.numel(), prec, 2);
  const T* gp = bf16_operand(dy.ptr<T>(), dy.numel(), prec, 3);
  const T* yp = y.ptr<T>();
  const T* lp = lse.ptr<T>();
  T *dqp = dq.ptr<T>(), *dkp = dk.ptr<T>(), *dvp = dv.ptr<T>();
  const int ldq = int(d.H * d.D), ldkv = int(d.KVH * d.D), Tn = int(d.Tq), Dn = int(d.D);
#pragma omp parallel
  {
    std::vector<T> P(d.Tq * d.Tk), dS(d.Tq * d.Tk);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t kvh = 0; kvh < d.KVH; ++kvh) {
        const int64_t kvo = d.kv_offset(b, kvh);
        for (int64_t t = 0; t < d.Tk; ++t) {
          std::fill_n(dkp + kvo + t * ldkv, d.D, T(0));
          std::fill_n(dvp + kvo + t * ldkv, d.D, T(0));
        }
        for (int64_t h = kvh * d.G; h < (kvh + 1) * d.G; ++h) {
          const int64_t qo = d.q_offset(b, h);
          scores(P.data(), qp + qo, kp + kvo, d, scale);
          // dP (T, T) = dY V^T, into dS
          gemm<T>(false, true, Tn, Tn, Dn, T(1), gp + qo, ldq, vp + kvo, ldkv, T(0), dS.data(), Tn);
          for (int64_t t = 0; t < d.Tq; ++t) {
            T* p = P.data() + t * d.Tk;
            T* ds = dS.data() + t * d.Tk;
            const int64_t s0 = first_key(t, window);
            const T l = lp[(b * d.H + h) * d.Tq + t];
            T delta = 0;  // sum_s p_s dP_s = dY_t . Y_t
            for (int64_t i = 0; i < d.D; ++i) delta += gp[qo + t * ldq + i] * yp[qo + t * ldq + i];
#pragma omp simd
            for (int64_t s = 0; s < d.Tk; ++s) {
              const bool visible = s >= s0 && s <= t;
              p[s] = visible ? exp_fast(p[s] - l) : T(0);
              ds[s] = visible ? p[s] * (ds[s] - delta) * scale : T(0);
            }
          }
          round_block_to_bf16(P.data(), d.Tq, d.Tk, d.Tk, prec);
          round_block_to_bf16(dS.data(), d.Tq, d.Tk, d.Tk, prec);
          // dQ_bh = dS K; dK += dS^T Q_bh; dV += P^T dY_bh
          gemm<T>(false, false, Tn, Dn, Tn, T(1), dS.data(), Tn, kp + kvo, ldkv, T(0), dqp + qo, ldq);
          gemm<T>(true, false, Tn, Dn, Tn, T(1), dS.data(), Tn, qp + qo, ldq, T(1), dkp + kvo, ldkv);
          gemm<T>(true, false, Tn, Dn, Tn, T(1), P.data(), Tn, gp + qo, ldq, T(1), dvp + kvo, ldkv);
        }
      }
  }
}

#define INSTANTIATE(T)                                                                                           \
  template void attention_forward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int, \
                                     Precision);                                                                \
  template void attention_forward_kv<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, int,  \
                                        Precision);                                                             \
  template void attention_backward<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,   \
                                      const Tensor&, const Tensor&, const Tensor&, const Tensor&, int, Precision);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
