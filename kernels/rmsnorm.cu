// CUDA RMSNorm (fp32): one warp per row for the forward and dx. The gain gradient is a deterministic
// two-stage reduction over rows, without atomics: stage 1 gives each block 32 columns of a chunk of
// kDwRows rows (8 threads per column, each summing every 8th row in row order, then the 8 partials summed
// in a fixed order) and writes one partial per (chunk, column); stage 2 sums a column's partials in
// chunk order. Reads are coalesced and the work spreads over (C/32) x (N/kDwRows) blocks instead of one
// thread per column walking all N rows.
#include "kernels/common.cuh"
#include "ops/rmsnorm.h"

namespace nw::cuda {

namespace {
__global__ void rmsnorm_forward_kernel(float* y, float* rstd, const float* x, const float* w, int N, int C, float eps) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* xr = x + (size_t)row * C;
  float ss = 0.f;
  for (int c = lane; c < C; c += 32) ss += xr[c] * xr[c];
  const float r = rsqrtf(detail::warp_sum(ss) / C + eps);
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
  const float k = detail::warp_sum(dot) * r * r / C;
  for (int c = lane; c < C; c += 32) dx[(size_t)row * C + c] = r * (gr[c] * (w ? w[c] : 1.f) - xr[c] * k);
}

constexpr int kDwRows = 256;  // rows per stage-1 chunk
constexpr int kDwLanes = 8;   // threads per column in stage 1

// partial[chunk * C + c] = sum over the chunk's rows n of dy[n, c] x[n, c] rstd[n]. Block (32, kDwLanes).
__global__ void rmsnorm_dw_partial_kernel(float* partial, const float* dy, const float* x, const float* rstd, int N,
                                          int C) {
  __shared__ float part[kDwLanes][32];
  const int c = blockIdx.x * 32 + threadIdx.x, chunk = blockIdx.y;
  const int n_end = min(N, (chunk + 1) * kDwRows);
  float acc = 0.f;
  if (c < C)
    for (int n = chunk * kDwRows + threadIdx.y; n < n_end; n += kDwLanes)
      acc += dy[(size_t)n * C + c] * x[(size_t)n * C + c] * rstd[n];
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  float sum = 0.f;
#pragma unroll
  for (int l = 0; l < kDwLanes; ++l) sum += part[l][threadIdx.x];
  partial[(size_t)chunk * C + c] = sum;
}

// dw[c] += sum over chunks, in chunk order.
__global__ void rmsnorm_dw_final_kernel(float* dw, const float* partial, int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float sum = 0.f;
  for (int k = 0; k < chunks; ++k) sum += partial[(size_t)k * C + c];
  dw[c] += sum;
}

void require_f32(const Tensor& t, const char* op) {
  NW_CHECK(t.dtype == DType::F32, op, ": the CUDA kernel takes float32, got ", t.describe());
}
}  // namespace

void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w, float eps) {
  require_f32(x, "rmsnorm_forward");
  const int N = static_cast<int>(x.size(0)), C = static_cast<int>(x.size(1)), rows_per_block = 8;
  if (N == 0) return;  // a grid of zero blocks is a launch error
  rmsnorm_forward_kernel<<<(N + rows_per_block - 1) / rows_per_block, 32 * rows_per_block, 0, detail::stream()>>>(
      y.ptr<float>(), rstd.ptr<float>(), x.ptr<float>(), w.defined() ? w.ptr<float>() : nullptr, N, C, eps);
  NW_CUDA_CHECK(cudaGetLastError());
}

void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                      const Tensor& rstd) {
  require_f32(x, "rmsnorm_backward");
  const int N = static_cast<int>(x.size(0)), C = static_cast<int>(x.size(1)), rows_per_block = 8;
  if (N == 0) return;  // nothing to write; dW += 0
  rmsnorm_backward_dx_kernel<<<(N + rows_per_block - 1) / rows_per_block, 32 * rows_per_block, 0, detail::stream()>>>(
      dx.ptr<float>(), dy.ptr<float>(), x.ptr<float>(), w.defined() ? w.ptr<float>() : nullptr, rstd.ptr<float>(), N, C);
  NW_CUDA_CHECK(cudaGetLastError());
  if (dw.defined()) rmsnorm_gain_backward(dw, dy, x, rstd);
}

void rmsnorm_gain_backward(const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& rstd) {
  const int N = static_cast<int>(x.size(0)), C = static_cast<int>(x.size(1));
  if (N == 0 || C == 0) return;
  const int chunks = (N + kDwRows - 1) / kDwRows;
  NW_CHECK(chunks < 65536, "rmsnorm gain gradient: ", N, " rows exceed the CUDA grid");
  detail::Scratch partial(size_t(chunks) * C * sizeof(float));
  rmsnorm_dw_partial_kernel<<<dim3((C + 31) / 32, chunks), dim3(32, kDwLanes), 0, detail::stream()>>>(
      partial.as<float>(), dy.ptr<float>(), x.ptr<float>(), rstd.ptr<float>(), N, C);
  NW_CUDA_CHECK(cudaGetLastError());
  rmsnorm_dw_final_kernel<<<(C + 255) / 256, 256, 0, detail::stream()>>>(dw.ptr<float>(), partial.as<float>(), chunks, C);
  NW_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nw::cuda
