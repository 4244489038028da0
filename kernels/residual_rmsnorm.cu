// CUDA residual add + RMSNorm (fp32): one block per row. The forward adds f into the row, sums the squares
// with a fixed block reduction (kernels/common.cuh) and writes y from the row it just wrote; the backward
// reduces dy*w*x the same way and adds the norm's input gradient into the stream's gradient. The gain
// gradient is rmsnorm's deterministic two-stage reduction over rows.
#include "kernels/common.cuh"
#include "ops/residual_rmsnorm.h"
#include "ops/rmsnorm.h"

namespace nw::cuda {

namespace {
// Threads per row: fixed by C, so a shape always reduces in the same order.
int row_threads(int64_t C) { return C <= 256 ? 64 : C <= 1024 ? 128 : 256; }

__global__ void residual_rmsnorm_forward_kernel(float* y, float* rstd, float* x, const float* f, const float* w, int C,
                                                float eps) {
  const size_t row = blockIdx.x;
  float* xr = x + row * C;
  const float* fr = f + row * C;
  float ss = 0.f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = xr[c] + fr[c];
    xr[c] = v;
    ss += v * v;
  }
  const float r = rsqrtf(detail::block_sum(ss) / C + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  for (int c = threadIdx.x; c < C; c += blockDim.x) y[row * C + c] = xr[c] * r * (w ? w[c] : 1.f);
}

__global__ void residual_rmsnorm_backward_kernel(float* dx, const float* dy, const float* x, const float* w,
                                                 const float* rstd, int C) {
  const size_t row = blockIdx.x;
  const float *xr = x + row * C, *gr = dy + row * C;
  const float r = rstd[row];
  float dot = 0.f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dot += gr[c] * (w ? w[c] : 1.f) * xr[c];
  const float k = detail::block_sum(dot) * r * r / C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dx[row * C + c] += r * (gr[c] * (w ? w[c] : 1.f) - xr[c] * k);
}
}  // namespace

void residual_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& f, const Tensor& w,
                              float eps) {
  detail::require_f32("residual_rmsnorm_forward", {&y, &rstd, &x, &f, &w});
  const int64_t N = x.size(0), C = x.size(1);
  if (N == 0 || C == 0) return;
  residual_rmsnorm_forward_kernel<<<static_cast<unsigned>(N), row_threads(C), 0, detail::stream()>>>(
      y.ptr<float>(), rstd.ptr<float>(), x.ptr<float>(), f.ptr<float>(), w.defined() ? w.ptr<float>() : nullptr,
      static_cast<int>(C), eps);
  NW_CUDA_LAUNCH_CHECK();
}

void residual_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                               const Tensor& rstd) {
  detail::require_f32("residual_rmsnorm_backward", {&dx, &dw, &dy, &x, &w, &rstd});
  const int64_t N = x.size(0), C = x.size(1);
  if (N == 0 || C == 0) return;
  residual_rmsnorm_backward_kernel<<<static_cast<unsigned>(N), row_threads(C), 0, detail::stream()>>>(
      dx.ptr<float>(), dy.ptr<float>(), x.ptr<float>(), w.defined() ? w.ptr<float>() : nullptr, rstd.ptr<float>(),
      static_cast<int>(C));
  NW_CUDA_LAUNCH_CHECK();
  if (dw.defined()) rmsnorm_gain_backward(dw, dy, x, rstd);
}

}  // namespace nw::cuda
