#include "ops/residual_rmsnorm.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

static void check_residual_rmsnorm(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& other,
                                   const Tensor& w, const char* op, const char* other_name) {
  NW_CHECK(x.ndim == 2, op, ": x must be (N, C), got ", x.describe());
  const int64_t N = x.size(0), C = x.size(1);
  check_tensor(out, op, "output", x.dtype, x.device, {N, C});
  check_tensor(other, op, other_name, x.dtype, x.device, {N, C});
  check_tensor(rstd, op, "rstd", x.dtype, x.device, {N});
  if (w.defined()) check_tensor(w, op, "weight", x.dtype, x.device, {C});
}

void residual_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& f, const Tensor& w,
                              float eps) {
  const profiler::Scope scope("residual_rmsnorm_forward", y.device);
  check_residual_rmsnorm(y, rstd, x, f, w, "residual_rmsnorm_forward", "f");
  if (x.device == Device::CUDA) return cuda::residual_rmsnorm_forward(y, rstd, x, f, w, eps);
  NW_DISPATCH_CPU(x.dtype, T, cpu::residual_rmsnorm_forward<T>(y, rstd, x, f, w, eps));
}

void residual_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                               const Tensor& rstd) {
  const profiler::Scope scope("residual_rmsnorm_backward", dx.device);
  check_residual_rmsnorm(dx, rstd, x, dy, w, "residual_rmsnorm_backward", "dy");
  NW_CHECK(dw.defined() == w.defined(), "residual_rmsnorm_backward: dw and w must both be given or both be missing");
  if (dw.defined()) check_tensor(dw, "residual_rmsnorm_backward", "dw", x.dtype, x.device, {x.size(1)});
  if (x.device == Device::CUDA) return cuda::residual_rmsnorm_backward(dx, dw, dy, x, w, rstd);
  NW_DISPATCH_CPU(x.dtype, T, cpu::residual_rmsnorm_backward<T>(dx, dw, dy, x, w, rstd));
}

}  // namespace nw
