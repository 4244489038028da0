// CUDA rotary embedding (fp32), in place: one thread per rotated pair (i, i + D/2) of one head.
// The tables are computed in float64 on the device and rounded once, as on the CPU.
#include "kernels/common.cuh"
#include "ops/rope.h"

namespace nw::cuda {

namespace {
// sign +1: forward rotation; -1: its inverse (the backward).
__global__ void rope_kernel(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t H,
                            int64_t half, float sign) {
  NW_GRID_STRIDE(idx, B * T * H * half) {
    const int64_t i = idx % half, row = idx / half;  // row = (b*T + t)*H + h
    const int64_t t = (row / H) % T;
    float* v = x + row * 2 * half;
    const float c = cos[t * half + i], si = sign * sin[t * half + i];
    const float x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c + x2 * si;
    v[i + half] = -x1 * si + x2 * c;
  }
}

__global__ void rope_tables_kernel(float* cos_t, float* sin_t, int64_t T, int64_t half, double base) {
  NW_GRID_STRIDE(idx, T * half) {
    const int64_t t = idx / half, i = idx % half;
    const double angle = static_cast<double>(t) * pow(base, -static_cast<double>(i) / static_cast<double>(half));
    cos_t[idx] = static_cast<float>(::cos(angle));
    sin_t[idx] = static_cast<float>(::sin(angle));
  }
}

void rotate(const Tensor& x, const Tensor& cos, const Tensor& sin, float sign, const char* op) {
  detail::require_f32(op, {&x, &cos, &sin});
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), half = x.size(3) / 2;
  if (B * T * H * half == 0) return;
  rope_kernel<<<detail::grid_for(B * T * H * half), 256, 0, detail::stream()>>>(x.ptr<float>(), cos.ptr<float>(), sin.ptr<float>(), B, T,
                                                           H, half, sign);
  NW_CUDA_LAUNCH_CHECK();
}
}  // namespace

void rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin) { rotate(x, cos, sin, 1.f, "rope_forward"); }
void rope_backward(const Tensor& dx, const Tensor& cos, const Tensor& sin) { rotate(dx, cos, sin, -1.f, "rope_backward"); }

void rope_tables(const Tensor& cos, const Tensor& sin, double base) {
  detail::require_f32("rope_tables", {&cos, &sin});
  const int64_t T = cos.size(0), half = cos.size(1);
  if (T * half == 0) return;
  rope_tables_kernel<<<detail::grid_for(T * half), 256, 0, detail::stream()>>>(cos.ptr<float>(), sin.ptr<float>(), T, half, base);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
