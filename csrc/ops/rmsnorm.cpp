#include "ops/rmsnorm.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

static void check_rmsnorm(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w, const char* op) {
  NW_CHECK(x.ndim == 2, op, ": x must be (N, C), got ", x.describe());
  const int64_t N = x.size(0), C = x.size(1);
  check_tensor(y, op, "output", x.dtype, x.device, {N, C});
  check_tensor(rstd, op, "rstd", x.dtype, x.device, {N});
  if (w.defined()) check_tensor(w, op, "weight", x.dtype, x.device, {C});
}

void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w, float eps) {
  const profiler::Scope scope("rmsnorm_forward", y.device);
  check_rmsnorm(y, rstd, x, w, "rmsnorm_forward");
  if (x.device == Device::CUDA) return cuda::rmsnorm_forward(y, rstd, x, w, eps);
  NW_DISPATCH_CPU(x.dtype, T, cpu::rmsnorm_forward<T>(y, rstd, x, w, eps));
}

void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                      const Tensor& rstd) {
  const profiler::Scope scope("rmsnorm_backward", dx.device);
  check_rmsnorm(dx, rstd, x, w, "rmsnorm_backward");
  check_same(dy, x, "rmsnorm_backward");
  NW_CHECK(dy.numel() == x.numel(), "rmsnorm_backward: dy must match x, got ", dy.describe());
  NW_CHECK(dw.defined() == w.defined(), "rmsnorm_backward: dw and w must both be given or both be missing");
  if (dw.defined()) check_tensor(dw, "rmsnorm_backward", "dw", x.dtype, x.device, {x.size(1)});
  if (x.device == Device::CUDA) return cuda::rmsnorm_backward(dx, dw, dy, x, w, rstd);
  NW_DISPATCH_CPU(x.dtype, T, cpu::rmsnorm_backward<T>(dx, dw, dy, x, w, rstd));
}

}  // namespace nw
