#include "ops/rope.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

static void check_rope(const Tensor& x, const Tensor& cos, const Tensor& sin, const char* op) {
  NW_CHECK(x.ndim == 4 && x.size(3) % 2 == 0, op, ": x must be (B, T, H, D) with even D, got ", x.describe());
  check_tensor(cos, op, "cos", x.dtype, x.device, {cos.size(0), x.size(3) / 2});
  NW_CHECK(cos.size(0) >= x.size(1), op, ": rope tables cover ", cos.size(0), " positions, need ", x.size(1));
  check_tensor(sin, op, "sin", x.dtype, x.device, {cos.size(0), x.size(3) / 2});
}

void rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const profiler::Scope scope("rope_forward", x.device);
  check_rope(x, cos, sin, "rope_forward");
  if (x.device == Device::CUDA) return cuda::rope_forward(x, cos, sin);
  NW_DISPATCH_CPU(x.dtype, T, cpu::rope_forward<T>(x, cos, sin));
}

void rope_backward(const Tensor& dx, const Tensor& cos, const Tensor& sin) {
  const profiler::Scope scope("rope_backward", dx.device);
  check_rope(dx, cos, sin, "rope_backward");
  if (dx.device == Device::CUDA) return cuda::rope_backward(dx, cos, sin);
  NW_DISPATCH_CPU(dx.dtype, T, cpu::rope_backward<T>(dx, cos, sin));
}

void rope_tables(const Tensor& cos, const Tensor& sin, double base) {
  const profiler::Scope scope("rope_tables", cos.device);
  NW_CHECK(base > 1, "rope_tables: base must be > 1, got ", base);
  check_tensor(sin, "rope_tables", "sin", cos.dtype, cos.device, {cos.size(0), cos.size(1)});
  if (cos.device == Device::CUDA) return cuda::rope_tables(cos, sin, base);
  NW_DISPATCH_CPU(cos.dtype, T, cpu::rope_tables<T>(cos, sin, base));
}

}  // namespace nw
