#include "ops/grouped_linear.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

static void check_grouped(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& offsets, const char* op) {
  NW_CHECK(x.ndim == 2 && w.ndim == 3, op, ": x must be (R, in) and w (E, out, in), got ", x.describe(), " and ",
           w.describe());
  const int64_t E = w.size(0);
  check_tensor(w, op, "weight", x.dtype, x.device, {E, w.size(1), x.size(1)});
  check_tensor(y, op, "output", x.dtype, x.device, {x.size(0), w.size(1)});
  check_tensor(offsets, op, "offsets", DType::I32, x.device, {E + 1});
  if (x.device == Device::CPU) {
    const int32_t* o = offsets.ptr<int32_t>();
    bool ok = o[0] == 0 && o[E] == x.size(0);
    for (int64_t e = 0; e < E; ++e) ok = ok && o[e] <= o[e + 1];
    NW_CHECK(ok, op, ": offsets must rise from 0 to the row count ", x.size(0));
  }
}

void grouped_linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& offsets,
                            Precision precision) {
  const profiler::Scope scope("grouped_linear_forward", y.device);
  check_grouped(y, x, w, offsets, "grouped_linear_forward");
  check_precision(precision, x, "grouped_linear_forward");
  if (x.device == Device::CUDA) return cuda::grouped_linear_forward(y, x, w, offsets, precision);
  NW_DISPATCH_CPU(x.dtype, T, cpu::grouped_linear_forward<T>(y, x, w, offsets, precision));
}

void grouped_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                             const Tensor& offsets, Precision precision) {
  const profiler::Scope scope("grouped_linear_backward", dy.device);
  check_grouped(dy, x, w, offsets, "grouped_linear_backward");
  check_precision(precision, x, "grouped_linear_backward");
  if (dx.defined()) check_tensor(dx, "grouped_linear_backward", "dx", x.dtype, x.device, {x.size(0), x.size(1)});
  check_tensor(dw, "grouped_linear_backward", "dw", x.dtype, x.device, {w.size(0), w.size(1), w.size(2)});
  if (x.device == Device::CUDA) return cuda::grouped_linear_backward(dx, dw, dy, x, w, offsets, precision);
  NW_DISPATCH_CPU(x.dtype, T, cpu::grouped_linear_backward<T>(dx, dw, dy, x, w, offsets, precision));
}

}  // namespace nw
