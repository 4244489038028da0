// CPU residual add.
#include "ops/residual.h"

namespace nw::cpu {

template <typename T>
void residual_add(const Tensor& x, const Tensor& f) {
  const int64_t n = x.numel();
  T* xp = x.ptr<T>();
  const T* fp = f.ptr<T>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) xp[i] += fp[i];
}

template void residual_add<float>(const Tensor&, const Tensor&);
template void residual_add<double>(const Tensor&, const Tensor&);

}  // namespace nw::cpu
