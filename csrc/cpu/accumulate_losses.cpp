// CPU loss accumulation: one float64 sum in token order.
#include "ops/accumulate_losses.h"

namespace nw::cpu {

template <typename T>
void accumulate_losses(const Tensor& acc, const Tensor& losses, const Tensor& weights, const Tensor& divisor,
                       const Tensor& balance) {
  const int64_t n = losses.numel();
  const T* lp = losses.ptr<T>();
  const T* wp = weights.defined() ? weights.ptr<T>() : nullptr;
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += wp ? double(wp[i]) * double(lp[i]) : double(lp[i]);
  double* a = acc.ptr<double>();
  const double d = divisor.ptr<double>()[0];
  a[0] += d != 0 ? s / d : 0.0;
  if (balance.defined()) a[1] += balance.ptr<double>()[0];
}

template void accumulate_losses<float>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&);
template void accumulate_losses<double>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&);

}  // namespace nw::cpu
