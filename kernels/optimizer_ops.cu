// CUDA optimizer math (fp32 parameters and states), following csrc/cpu/optimizer_ops.cpp:
// - adamw_update, scale_inplace: elementwise.
// - sum_squares: float64 partial sums over a fixed partition (one block per 16384 elements, a fixed
//   shuffle tree inside the block), then one block sums the partials in a fixed order: the same bits on
//   every run (not the CPU's bits: the order differs). The result is copied to the host.
// - clip_control: the same sum, then the norm, the clipping scale and whether the step applies, all
//   written to a StepControl in device memory; scale_by_control and the updates read it there (an update
//   given a control with apply == 0 returns before touching memory), so a step never waits on the host.
// - newton_schulz / muon_update: the M matrices of a parameter are orthogonalised together with
//   strided-batched cuBLAS GEMMs on the wide orientation (a tall matrix is transposed first), after a
//   Frobenius normalisation X / (||X|| + 1e-7) computed per matrix in float64 on the device.
#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/cublas.cuh"
#include "ops/optimizer_ops.h"

namespace nw::cuda {

namespace {
constexpr int64_t kChunk = 1 << 14;  // elements per partial sum of sum_squares

// Whether the step's updates apply: always without a control block, else its apply flag.
__device__ __forceinline__ bool step_applies(const StepControl* control) { return !control || control->apply; }

__global__ void adamw_kernel(float* w, const float* g, float* m, float* v, int64_t n, float b1, float b2, float eps,
                             float bc1, float bc2, float lr, float decay, const StepControl* control) {
  if (!step_applies(control)) return;
  NW_GRID_STRIDE(i, n) {
    const float mi = b1 * m[i] + (1.f - b1) * g[i];
    const float vi = b2 * v[i] + (1.f - b2) * g[i] * g[i];
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] * decay - lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
  }
}

__global__ void scale_kernel(float* x, int64_t n, float s) {
  NW_GRID_STRIDE(i, n) x[i] *= s;
}

__global__ void scale_by_control_kernel(float* x, int64_t n, const StepControl* control) {
  const float s = control->clip_scale;
  if (s == 1.f) return;  // not clipping (or not applying): leave the gradients as they are
  NW_GRID_STRIDE(i, n) x[i] *= s;
}

__global__ void sum_squares_partial_kernel(double* partial, const float* x, int64_t n) {
  const int64_t begin = blockIdx.x * kChunk, end = min(n, begin + kChunk);
  double s = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) s += double(x[i]) * double(x[i]);
  s = detail::block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__device__ __forceinline__ double sum_partials(const double* partial, int64_t n) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  return detail::block_sum(s);
}

__global__ void sum_partials_kernel(double* out, const double* partial, int64_t n) {
  const double s = sum_partials(partial, n);
  if (threadIdx.x == 0) *out = s;
}

// The optimizer's decision, as Optimizer::step takes it on the CPU: a non-finite norm skips the step;
// clipping scales by float(grad_clip / norm) computed in double.
__global__ void clip_control_kernel(StepControl* control, const double* partial, int64_t chunks, float grad_clip) {
  const double s = sum_partials(partial, chunks);
  if (threadIdx.x != 0) return;
  const double norm = sqrt(s);
  const bool finite = isfinite(norm);
  control->sum_squares = s;
  control->norm = norm;
  control->apply = finite;
  control->clip_scale = finite && grad_clip > 0 && norm > double(grad_clip) ? float(double(grad_clip) / norm) : 1.f;
}

// Launches the partial sums of x^2 over kChunk-element chunks into partial.
void launch_sum_squares_partials(double* partial, const float* x, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  sum_squares_partial_kernel<<<static_cast<unsigned>(chunks), 256>>>(partial, x, n);
  NW_CUDA_LAUNCH_CHECK();
}

// dst[mat] (C, R) = src[mat] (R, C)^T for M matrices.
__global__ void transpose_kernel(float* dst, const float* src, int64_t M, int64_t R, int64_t C) {
  NW_GRID_STRIDE(idx, M * R * C) {
    const int64_t mat = idx / (R * C), rc = idx % (R * C), i = rc / C, j = rc % C;
    dst[mat * R * C + j * R + i] = src[idx];
  }
}

// One block per matrix: X <- X / (||X||_F + 1e-7), the norm summed in float64.
__global__ void frobenius_normalize_kernel(float* x, int64_t n) {
  float* X = x + blockIdx.x * n;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += double(X[i]) * double(X[i]);
  ss = detail::block_sum(ss);
  const float inv = static_cast<float>(1.0 / (sqrt(ss) + 1e-7));
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) X[i] *= inv;
}

__global__ void axpy_kernel(float* x, const float* y, float a, int64_t n) {  // x = a x + y
  NW_GRID_STRIDE(i, n) x[i] = a * x[i] + y[i];
}

__global__ void muon_momentum_kernel(float* u, float* buf, const float* g, int64_t n, float mu, bool nesterov,
                                     const StepControl* control) {
  if (!step_applies(control)) return;
  NW_GRID_STRIDE(i, n) {
    const float b = mu * buf[i] + g[i];
    buf[i] = b;
    u[i] = nesterov ? g[i] + mu * b : b;
  }
}

__global__ void muon_apply_kernel(float* w, const float* u, int64_t n, float decay, float lr, float scale,
                                  const StepControl* control) {
  if (!step_applies(control)) return;
  NW_GRID_STRIDE(i, n) w[i] = w[i] * decay - lr * scale * u[i];
}

// Orthogonalises the M (R, C) matrices at u in place. ws holds M * newton_schulz_workspace_numel(R, C)
// floats: X, Y (M, m, n) then A, B (M, m, m), with (m, n) the wide orientation.
void newton_schulz_batched(float* u, int64_t M, int64_t R, int64_t C, int steps, float* ws) {
  constexpr float a = 3.4445f, b = -4.7750f, c = 2.0315f;
  const bool tall = R > C;
  const int64_t m = tall ? C : R, n = tall ? R : C, mn = m * n, mm = m * m;
  if (M == 0 || mn == 0) return;
  NW_CHECK(M * mn < (int64_t(1) << 31) && M < (int64_t(1) << 31), "newton_schulz: matrices too large");
  float* X = ws;
  float* Y = X + M * mn;
  float* A = Y + M * mn;
  float* B = A + M * mm;
  if (tall) {
    transpose_kernel<<<detail::grid_for(M * mn), 256>>>(X, u, M, R, C);
    NW_CUDA_LAUNCH_CHECK();
  } else {
    NW_CUDA_CHECK(cudaMemcpyAsync(X, u, M * mn * sizeof(float), cudaMemcpyDeviceToDevice, 0));
  }
  frobenius_normalize_kernel<<<static_cast<unsigned>(M), 256>>>(X, mn);
  NW_CUDA_LAUNCH_CHECK();
  const int mi = int(m), ni = int(n), Mi = int(M);
  for (int it = 0; it < steps; ++it) {
    sgemm_strided_batched(false, true, mi, mi, ni, 1.f, X, ni, mn, X, ni, mn, 0.f, A, mi, mm, Mi);  // A = X X^T
    NW_CUDA_CHECK(cudaMemcpyAsync(B, A, M * mm * sizeof(float), cudaMemcpyDeviceToDevice, 0));
    sgemm_strided_batched(false, false, mi, mi, mi, c, A, mi, mm, A, mi, mm, b, B, mi, mm, Mi);     // B = b A + c A A
    sgemm_strided_batched(false, false, mi, ni, mi, 1.f, B, mi, mm, X, ni, mn, 0.f, Y, ni, mn, Mi); // Y = B X
    axpy_kernel<<<detail::grid_for(M * mn), 256>>>(X, Y, a, M * mn);                                 // X = a X + Y
    NW_CUDA_LAUNCH_CHECK();
  }
  if (tall) {
    transpose_kernel<<<detail::grid_for(M * mn), 256>>>(u, X, M, C, R);
    NW_CUDA_LAUNCH_CHECK();
  } else {
    NW_CUDA_CHECK(cudaMemcpyAsync(u, X, M * mn * sizeof(float), cudaMemcpyDeviceToDevice, 0));
  }
}
}  // namespace

void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a) {
  detail::require_f32("adamw_update", {&param, &grad, &m, &v});
  const int64_t n = param.numel();
  if (n == 0) return;
  const float bc1 = float(1.0 - std::pow(double(a.beta1), double(a.step)));
  const float bc2 = float(1.0 - std::pow(double(a.beta2), double(a.step)));
  adamw_kernel<<<detail::grid_for(n), 256>>>(param.ptr<float>(), grad.ptr<float>(), m.ptr<float>(), v.ptr<float>(), n,
                                             a.beta1, a.beta2, a.eps, bc1, bc2, a.lr, 1.f - a.lr * a.weight_decay,
                                             a.control);
  NW_CUDA_LAUNCH_CHECK();
}

void newton_schulz(const Tensor& x, const Tensor& workspace, int steps) {
  detail::require_f32("newton_schulz", {&x, &workspace});
  newton_schulz_batched(x.ptr<float>(), 1, x.size(0), x.size(1), steps, workspace.ptr<float>());
}

void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace,
                 const MuonArgs& a) {
  detail::require_f32("muon_update", {&param, &grad, &momentum, &workspace});
  const int64_t M = param.size(0), R = param.size(1), C = param.size(2), n = M * R * C;
  if (n == 0) return;
  const float scale = float(std::sqrt(std::max(1.0, double(R) / double(C))));
  const int64_t ns_numel = newton_schulz_workspace_numel(R, C);
  // One matrix fits the caller's workspace (NS scratch, then the update). Several matrices are
  // orthogonalised in one batch, whose scratch comes from the stream-ordered pool.
  detail::Scratch batch_ws(M > 1 ? M * muon_workspace_numel(R, C) * sizeof(float) : 0);
  float* ws = M > 1 ? batch_ws.as<float>() : workspace.ptr<float>();
  float* u = ws + M * ns_numel;  // (M, R, C) updates after the NS scratch
  muon_momentum_kernel<<<detail::grid_for(n), 256>>>(u, momentum.ptr<float>(), grad.ptr<float>(), n, a.momentum,
                                                     a.nesterov, a.control);
  NW_CUDA_LAUNCH_CHECK();
  newton_schulz_batched(u, M, R, C, a.ns_steps, ws);
  muon_apply_kernel<<<detail::grid_for(n), 256>>>(param.ptr<float>(), u, n, 1.f - a.lr * a.weight_decay, a.lr, scale,
                                                a.control);
  NW_CUDA_LAUNCH_CHECK();
}

double sum_squares(const Tensor& x) {
  detail::require_f32("sum_squares", {&x});
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  detail::Scratch scratch((chunks + 1) * sizeof(double));
  double* partial = scratch.as<double>();
  double* total = partial + chunks;
  launch_sum_squares_partials(partial, x.ptr<float>(), n);
  sum_partials_kernel<<<1, 1024>>>(total, partial, chunks);
  NW_CUDA_LAUNCH_CHECK();
  double result = 0;
  NW_CUDA_CHECK(cudaMemcpy(&result, total, sizeof(double), cudaMemcpyDeviceToHost));
  return result;
}

void scale_inplace(const Tensor& x, float s) {
  detail::require_f32("scale_inplace", {&x});
  const int64_t n = x.numel();
  if (n == 0) return;
  scale_kernel<<<detail::grid_for(n), 256>>>(x.ptr<float>(), n, s);
  NW_CUDA_LAUNCH_CHECK();
}

int64_t clip_partials(int64_t n) { return std::max<int64_t>(1, (n + kChunk - 1) / kChunk); }

void clip_control(StepControl* control, double* partial, const Tensor& grads, float grad_clip) {
  detail::require_f32("clip_control", {&grads});
  const int64_t n = grads.numel();
  if (n > 0) launch_sum_squares_partials(partial, grads.ptr<float>(), n);
  clip_control_kernel<<<1, 1024>>>(control, partial, n > 0 ? (n + kChunk - 1) / kChunk : 0, grad_clip);
  NW_CUDA_LAUNCH_CHECK();
}

void scale_by_control(const Tensor& x, const StepControl* control) {
  detail::require_f32("scale_by_control", {&x});
  const int64_t n = x.numel();
  if (n == 0) return;
  scale_by_control_kernel<<<detail::grid_for(n), 256>>>(x.ptr<float>(), n, control);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
