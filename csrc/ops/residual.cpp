#include "ops/residual.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

void residual_add(const Tensor& x, const Tensor& f) {
  const profiler::Scope scope("residual_add", x.device);
  check_same(x, f, "residual_add");
  NW_CHECK(x.numel() == f.numel(), "residual_add: ", x.describe(), " and ", f.describe(), " differ in size");
  if (x.device == Device::CUDA) return cuda::residual_add(x, f);
  NW_DISPATCH_CPU(x.dtype, T, cpu::residual_add<T>(x, f));
}

}  // namespace nw
