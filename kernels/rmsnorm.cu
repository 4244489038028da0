// CUDA RMSNorm (fp32): one warp per row for the forward and dx; the gain gradient is reduced per
// column over rows in row order, so it is deterministic without atomics.
#include "kernels/cuda_check.cuh"
#include "ops/rmsnorm.h"

namespace nw::cuda {

namespace {
__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void rmsnorm_forward_kernel(float* y, float* rstd, const float* x, const float* w, int N, int C, float eps) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* xr = x + (size_t)row * C;
  float ss = 0.f;
  for (int c = lane; c < C; c += 32) ss += xr[c] * xr[c];
  const float r = rsqrtf(warp_sum(ss) / C + eps);
  if (lane == 0) rstd[row] = r;
  for (int c = lane; c < C; c += 32) y[(size_t)row * C + c] = xr[c] * r * (w ? w[c] : 1.f);
}

__global__ void rmsnorm_backward_dx_kernel(float* dx, const float* dy, const float* x, const float* w,
                                           const float* rstd, int N, int C) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const float *xr = x + (size_t)row * C, *gr = dy + (size_t)row * C;
  const float r = rstd[row];
  float dot = 0.f;
  for (int c = lane; c < C; c += 32) dot += gr[c] * (w ? w[c] : 1.f) * xr[c];
  const float k = warp_sum(dot) * r * r / C;
  for (int c = lane; c < C; c += 32) dx[(size_t)row * C + c] = r * (gr[c] * (w ? w[c] : 1.f) - xr[c] * k);
}

__global__ void rmsnorm_backward_dw_kernel(float* dw, const float* dy, const float* x, const float* rstd, int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.f;
  for (int n = 0; n < N; ++n) acc += dy[(size_t)n * C + c] * x[(size_t)n * C + c] * rstd[n];
  dw[c] += acc;
}

void require_f32(const Tensor& t, const char* op) {
  NW_CHECK(t.dtype == DType::F32, op, ": the CUDA kernel takes float32, got ", t.describe());
}
}  // namespace

void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w, float eps) {
  require_f32(x, "rmsnorm_forward");
  const int N = static_cast<int>(x.size(0)), C = static_cast<int>(x.size(1)), rows_per_block = 8;
  rmsnorm_forward_kernel<<<(N + rows_per_block - 1) / rows_per_block, 32 * rows_per_block>>>(
      y.ptr<float>(), rstd.ptr<float>(), x.ptr<float>(), w.defined() ? w.ptr<float>() : nullptr, N, C, eps);
  NW_CUDA_CHECK(cudaGetLastError());
}

void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                      const Tensor& rstd) {
  require_f32(x, "rmsnorm_backward");
  const int N = static_cast<int>(x.size(0)), C = static_cast<int>(x.size(1)), rows_per_block = 8;
  rmsnorm_backward_dx_kernel<<<(N + rows_per_block - 1) / rows_per_block, 32 * rows_per_block>>>(
      dx.ptr<float>(), dy.ptr<float>(), x.ptr<float>(), w.defined() ? w.ptr<float>() : nullptr, rstd.ptr<float>(), N, C);
  NW_CUDA_CHECK(cudaGetLastError());
  if (dw.defined()) {
    rmsnorm_backward_dw_kernel<<<(C + 255) / 256, 256>>>(dw.ptr<float>(), dy.ptr<float>(), x.ptr<float>(),
                                                        rstd.ptr<float>(), N, C);
    NW_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace nw::cuda
