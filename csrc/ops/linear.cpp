#include "ops/linear.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

static void check_linear(const Tensor& y, const Tensor& x, const Tensor& w, const char* op) {
  NW_CHECK(x.ndim == 2 && w.ndim == 2, op, ": x must be (N, in) and w (out, in), got ", x.describe(), " and ",
           w.describe());
  check_tensor(w, op, "weight", x.dtype, x.device, {w.size(0), x.size(1)});
  check_tensor(y, op, "output", x.dtype, x.device, {x.size(0), w.size(0)});
}

void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, Precision precision) {
  const profiler::Scope scope("linear_forward", y.device);
  check_linear(y, x, w, "linear_forward");
  check_precision(precision, x, "linear_forward");
  if (x.device == Device::CUDA) return cuda::linear_forward(y, x, w, precision);
  NW_DISPATCH_CPU(x.dtype, T, cpu::linear_forward<T>(y, x, w, precision));
}

void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                     Precision precision) {
  const profiler::Scope scope("linear_backward", dy.device);
  check_linear(dy, x, w, "linear_backward");
  check_precision(precision, x, "linear_backward");
  if (dx.defined()) check_tensor(dx, "linear_backward", "dx", x.dtype, x.device, {x.size(0), x.size(1)});
  check_tensor(dw, "linear_backward", "dw", x.dtype, x.device, {w.size(0), w.size(1)});
  if (x.device == Device::CUDA) return cuda::linear_backward(dx, dw, dy, x, w, precision);
  NW_DISPATCH_CPU(x.dtype, T, cpu::linear_backward<T>(dx, dw, dy, x, w, precision));
}

}  // namespace nw
