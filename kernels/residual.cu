// CUDA residual add x += f (fp32, elementwise).
#include "kernels/common.cuh"
#include "ops/residual.h"

namespace nw::cuda {

namespace {
__global__ void residual_add_kernel(float* x, const float* f, int64_t n) {
  NW_GRID_STRIDE(i, n) x[i] += f[i];
}
}  // namespace

void residual_add(const Tensor& x, const Tensor& f) {
  detail::require_f32("residual_add", {&x, &f});
  const int64_t n = x.numel();
  if (n == 0) return;
  residual_add_kernel<<<detail::grid_for(n), 256, 0, detail::stream()>>>(x.ptr<float>(), f.ptr<float>(), n);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
