// CUDA loss accumulation (fp32 losses, float64 sums): one block of kThreads, since N is one micro-batch's
// tokens (thousands). Each thread sums a fixed stride in order, then a fixed shuffle tree adds the threads:
// the same bits on every run, no atomics.
#include "kernels/common.cuh"
#include "ops/accumulate_losses.h"

namespace nw::cuda {

namespace {
constexpr int kThreads = 1024;

__global__ void accumulate_losses_kernel(double* acc, const float* losses, const float* weights, int64_t n,
                                         const double* divisor, const double* balance) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    s += weights ? double(weights[i]) * double(losses[i]) : double(losses[i]);
  s = detail::block_sum(s);
  if (threadIdx.x != 0) return;
  const double d = *divisor;
  acc[0] += d != 0 ? s / d : 0.0;
  if (balance) acc[1] += *balance;
}
}  // namespace

void accumulate_losses(const Tensor& acc, const Tensor& losses, const Tensor& weights, const Tensor& divisor,
                       const Tensor& balance) {
  detail::require_f32("accumulate_losses", {&losses, &weights});
  accumulate_losses_kernel<<<1, kThreads, 0, detail::stream()>>>(
      acc.ptr<double>(), losses.ptr<float>(), weights.defined() ? weights.ptr<float>() : nullptr, losses.numel(),
      divisor.ptr<double>(), balance.defined() ? balance.ptr<double>() : nullptr);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
