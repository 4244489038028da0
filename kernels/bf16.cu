// Rounding to bf16 on the device (kernels/bf16.cuh).
#include "kernels/bf16.cuh"

namespace nw::cuda {

namespace {
__global__ void to_bf16_kernel(__nv_bfloat16* dst, const float* src, int64_t n) {
  NW_GRID_STRIDE(i, n) dst[i] = __float2bfloat16_rn(src[i]);
}
__global__ void round_to_bf16_kernel(float* dst, const float* src, int64_t n) {
  NW_GRID_STRIDE(i, n) dst[i] = round_bf16(src[i]);
}
}  // namespace

void to_bf16(__nv_bfloat16* dst, const float* src, int64_t n) {
  if (n == 0) return;
  to_bf16_kernel<<<detail::grid_for(n), 256, 0, detail::stream()>>>(dst, src, n);
  NW_CUDA_LAUNCH_CHECK();
}

void round_to_bf16(float* dst, const float* src, int64_t n) {
  if (n == 0) return;
  round_to_bf16_kernel<<<detail::grid_for(n), 256, 0, detail::stream()>>>(dst, src, n);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
