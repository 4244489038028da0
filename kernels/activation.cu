// CUDA MLP activations (fp32, elementwise): ReLU^2 on (N, H); SwiGLU on [gate | up] (N, 2H) -> (N, H).
// Same formulas as csrc/cpu/activation.cpp; expf is the accurate libdevice version (no fast math).
#include "kernels/common.cuh"
#include "ops/activation.h"

namespace nw::cuda {

namespace {
__global__ void relu2_forward_kernel(float* h, const float* x, int64_t n) {
  NW_GRID_STRIDE(i, n) {
    const float r = x[i] > 0.f ? x[i] : 0.f;
    h[i] = r * r;
  }
}

__global__ void relu2_backward_kernel(float* dx, const float* dh, const float* x, int64_t n) {
  NW_GRID_STRIDE(i, n) dx[i] = x[i] > 0.f ? 2.f * x[i] * dh[i] : 0.f;
}

__global__ void swiglu_forward_kernel(float* h, const float* x, int64_t N, int64_t H) {
  NW_GRID_STRIDE(i, N * H) {
    const int64_t n = i / H, j = i % H;
    const float g = x[n * 2 * H + j], u = x[n * 2 * H + H + j];
    h[i] = g / (1.f + expf(-g)) * u;
  }
}

__global__ void swiglu_backward_kernel(float* dx, const float* dh, const float* x, int64_t N, int64_t H) {
  NW_GRID_STRIDE(i, N * H) {
    const int64_t n = i / H, j = i % H;
    const float g = x[n * 2 * H + j], u = x[n * 2 * H + H + j], d = dh[i];
    const float sig = 1.f / (1.f + expf(-g));
    dx[n * 2 * H + j] = d * u * sig * (1.f + g * (1.f - sig));  // d silu(g)/dg = sig * (1 + g (1 - sig))
    dx[n * 2 * H + H + j] = d * g * sig;
  }
}
}  // namespace

void activation_forward(Activation a, const Tensor& h, const Tensor& pre) {
  detail::require_f32("activation_forward", {&h, &pre});
  const int64_t N = h.size(0), H = h.size(1);
  if (N * H == 0) return;
  if (a == Activation::ReLU2)
    relu2_forward_kernel<<<detail::grid_for(N * H), 256, 0, detail::stream()>>>(h.ptr<float>(), pre.ptr<float>(), N * H);
  else
    swiglu_forward_kernel<<<detail::grid_for(N * H), 256, 0, detail::stream()>>>(h.ptr<float>(), pre.ptr<float>(), N, H);
  NW_CUDA_LAUNCH_CHECK();
}

void activation_backward(Activation a, const Tensor& dpre, const Tensor& dh, const Tensor& pre) {
  detail::require_f32("activation_backward", {&dpre, &dh, &pre});
  const int64_t N = dh.size(0), H = dh.size(1);
  if (N * H == 0) return;
  if (a == Activation::ReLU2)
    relu2_backward_kernel<<<detail::grid_for(N * H), 256, 0, detail::stream()>>>(dpre.ptr<float>(), dh.ptr<float>(), pre.ptr<float>(), N * H);
  else
    swiglu_backward_kernel<<<detail::grid_for(N * H), 256, 0, detail::stream()>>>(dpre.ptr<float>(), dh.ptr<float>(), pre.ptr<float>(), N, H);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
