// CPU optimizer math: AdamW, Muon (Newton–Schulz through OpenBLAS GEMMs, bf16 precision emulated by
// rounding the matmul operands) and the chunked norm.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "cpu/blas.h"
#include "ops/optimizer_ops.h"

namespace nw::cpu {

namespace {
// An update's learning rate and weight decay: its arguments, times the control block's multipliers.
struct Rates {
  float lr, weight_decay;
};
template <typename Args>
Rates rates_of(const Args& a) {
  const StepControl* c = a.control;
  return c ? Rates{a.lr * c->scalars.lr_mult, a.weight_decay * c->scalars.wd_mult} : Rates{a.lr, a.weight_decay};
}
}  // namespace

template <typename T>
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a) {
  const int64_t n = param.numel();
  T *w = param.ptr<T>(), *mp = m.ptr<T>(), *vp = v.ptr<T>();
  const T* g = grad.ptr<T>();
  const StepControl* c = a.control;
  if (c && !c->apply) return;
  const Rates r = rates_of(a);
  const int64_t step = c ? c->steps : a.step;
  const T b1 = T(a.beta1), b2 = T(a.beta2), eps = T(a.eps);
  const T bc1 = T(1.0 - std::pow(double(a.beta1), double(step)));
  const T bc2 = T(1.0 - std::pow(double(a.beta2), double(step)));
  const T lr = T(r.lr), decay = T(1) - T(r.lr) * T(r.weight_decay);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    mp[i] = b1 * mp[i] + (T(1) - b1) * g[i];
    vp[i] = b2 * vp[i] + (T(1) - b2) * g[i] * g[i];
    w[i] = w[i] * decay - lr * (mp[i] / bc1) / (std::sqrt(vp[i] / bc2) + eps);
  }
}

namespace {
// A matmul operand in precision p: float32 values rounded to bf16 into `rounded` (where the CUDA backend
// converts to bf16), or src itself (fp32, or the float64 oracle).
template <typename T>
const T* ns_operand(const T* src, T* rounded, int64_t n, Precision p) {
  if constexpr (std::is_same_v<T, float>) {
    if (p == Precision::BF16) {
      round_to_bf16(rounded, src, n);
      return rounded;
    }
  }
  return src;
}
}  // namespace

template <typename T>
void newton_schulz(const Tensor& x, const Tensor& workspace, int steps, Precision p) {
  // Quintic iteration X <- a X + (b A + c A^2) X with A = X X^T, on the wide orientation (m <= n).
  // X, A and B stay float32; in bf16 precision each matmul reads bf16-rounded copies (Xr, Ar, Br).
  constexpr T a = T(3.4445), b = T(-4.7750), c = T(2.0315);
  const int64_t R = x.size(0), C = x.size(1);
  const bool tall = R > C;
  const int m = static_cast<int>(tall ? C : R), n = static_cast<int>(tall ? R : C);
  const int64_t mn = int64_t(m) * n, mm = int64_t(m) * m;
  T* X = workspace.ptr<T>();  // (m, n)
  T* Y = X + mn;              // (m, n)
  T* A = Y + mn;              // (m, m)
  T* Bm = A + mm;             // (m, m)
  T* Xr = Bm + mm;            // (m, n), bf16 precision only
  T* Ar = Xr + mn;            // (m, m), bf16 precision only
  T* Br = Ar + mm;            // (m, m), bf16 precision only
  T* src = x.ptr<T>();
  if (tall) {
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < C; ++j) X[j * R + i] = src[i * C + j];
  } else {
    std::copy_n(src, R * C, X);
  }
  double ss = 0;
  for (int64_t i = 0; i < R * C; ++i) ss += double(X[i]) * double(X[i]);
  const T inv = T(1.0 / (std::sqrt(ss) + 1e-7));
  for (int64_t i = 0; i < R * C; ++i) X[i] *= inv;
  for (int it = 0; it < steps; ++it) {
    const T* Xo = ns_operand(X, Xr, mn, p);
    syrk<T>(m, n, T(1), Xo, n, T(0), A, m);                          // A = X X^T (symmetric)
    std::copy_n(A, mm, Bm);
    const T* Ao = ns_operand(A, Ar, mm, p);
    syrk<T>(m, m, c, Ao, m, b, Bm, m);                               // B = b A + c A A^T, and A A^T = A A
    const T* Bo = ns_operand(Bm, Br, mm, p);
    gemm<T>(false, false, m, n, m, T(1), Bo, m, Xo, n, T(0), Y, n);  // Y = B X
    for (int64_t i = 0; i < mn; ++i) X[i] = a * X[i] + Y[i];
  }
  if (tall) {
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < C; ++j) src[i * C + j] = X[j * R + i];
  } else {
    std::copy_n(X, R * C, src);
  }
}

template <typename T>
void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace,
                 const MuonArgs& a) {
  const int64_t M = param.size(0), R = param.size(1), C = param.size(2), n = R * C;
  const StepControl* c = a.control;
  if (c && !c->apply) return;
  const Rates r = rates_of(a);
  const T mu = T(c ? c->scalars.muon_momentum : a.momentum);
  const T lr = T(r.lr), decay = T(1) - T(r.lr) * T(r.weight_decay);
  const T scale = T(std::sqrt(std::max(1.0, double(R) / double(C))));
  // Matrices are independent: with several (experts) and room for several scratch slots, each thread
  // takes whole matrices (single-threaded BLAS inside); a lone matrix splits its GEMMs instead.
  // Either way each matrix sees the same operations, so the result does not depend on the schedule.
  const int64_t per = muon_workspace_numel(R, C, a.precision), slots = workspace.numel() / per;
  const int64_t ns_numel = newton_schulz_workspace_numel(R, C, a.precision);
  const int threads = int(std::min<int64_t>({slots, M, omp_get_max_threads()}));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t mat = 0; mat < M; ++mat) {
    T* scratch = workspace.ptr<T>() + per * (threads > 1 ? omp_get_thread_num() : 0);
    T* u = scratch + ns_numel;  // the update, (R, C), after NS's scratch
    const Tensor ut(u, param.dtype, param.device, {R, C});
    const Tensor ws(scratch, param.dtype, param.device, {ns_numel});
    T* w = param.ptr<T>() + mat * n;
    T* buf = momentum.ptr<T>() + mat * n;
    const T* g = grad.ptr<T>() + mat * n;
    for (int64_t i = 0; i < n; ++i) {
      buf[i] = mu * buf[i] + g[i];
      u[i] = a.nesterov ? g[i] + mu * buf[i] : buf[i];
    }
    newton_schulz<T>(ut, ws, a.ns_steps, a.precision);
    for (int64_t i = 0; i < n; ++i) w[i] = w[i] * decay - lr * scale * u[i];
  }
}

template <typename T>
double sum_squares(const Tensor& x) {
  constexpr int64_t kChunk = 1 << 14;  // fixed, so the sum's order never depends on thread count
  const int64_t n = x.numel(), chunks = (n + kChunk - 1) / kChunk;
  const T* p = x.ptr<T>();
  std::vector<double> partial(chunks);
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    double s = 0;
    for (int64_t i = ch * kChunk; i < std::min(n, (ch + 1) * kChunk); ++i) s += double(p[i]) * double(p[i]);
    partial[ch] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

template <typename T>
void scale_inplace(const Tensor& x, float s) {
  const int64_t n = x.numel();
  T* p = x.ptr<T>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] *= T(s);
}

#define INSTANTIATE(T)                                                                                         \
  template void adamw_update<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const AdamWArgs&);  \
  template void muon_update<T>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const MuonArgs&);   \
  template void newton_schulz<T>(const Tensor&, const Tensor&, int, Precision);                                \
  template double sum_squares<T>(const Tensor&);                                                               \
  template void scale_inplace<T>(const Tensor&, float);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
