// CUDA optimizer math (fp32 parameters and states), following csrc/cpu/optimizer_ops.cpp:
// - adamw_update, scale_inplace: elementwise.
// - sum_squares: float64 partial sums over a fixed partition (one block per 16384 elements, a fixed
//   shuffle tree inside the block), then one block sums the partials in a fixed order: the same bits on
//   every run (not the CPU's bits: the order differs). The result is copied to the host.
// - clip_control: the same sum, then the norm, the clipping scale, whether the step applies and the
//   applied-step count, all written to a StepControl in device memory; scale_by_control and the updates
//   read it there, with the step's scalars the host staged (an update given a control with apply == 0
//   returns before touching memory), so a step never waits on the host and a replayed CUDA graph reads
//   each step's values.
// - newton_schulz / muon_update: the M matrices of a parameter (a layer's experts) are orthogonalised
//   together, one strided-batched cuBLAS GEMM per product on the wide orientation (a tall matrix is
//   transposed first), after a Frobenius normalisation X / (||X|| + 1e-7) computed per matrix on the
//   device (float64 partial sums over fixed chunks, summed in a fixed order: no host read, same bits
//   every run). In bf16 precision the GEMMs run on tensor cores (bf16 operands, float32 accumulation);
//   in fp32 they stay plain float32 (no TF32). All scratch comes from the caller's workspace.
#include <algorithm>
#include <cmath>

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/cublas.cuh"
#include "ops/optimizer_ops.h"

namespace nw::cuda {

namespace {
constexpr int64_t kChunk = 1 << 14;  // elements per partial sum of sum_squares

// Whether the step's updates apply: always without a control block, else its apply flag.
__device__ __forceinline__ bool step_applies(const StepControl* control) { return !control || control->apply; }

// An update's learning rate and weight decay: the arguments, times the control block's multipliers when
// given (the same float products the CPU backend takes).
struct LrDecay {
  float lr, decay;  // decay = 1 - lr * weight_decay
};
__device__ __forceinline__ LrDecay lr_decay(float lr, float weight_decay, const StepControl* control) {
  if (control) {
    lr *= control->scalars.lr_mult;
    weight_decay *= control->scalars.wd_mult;
  }
  return {lr, 1.f - __fmul_rn(lr, weight_decay)};  // __fmul_rn: no fused multiply-add, as on the CPU
}

__global__ void adamw_kernel(float* w, const float* g, float* m, float* v, int64_t n, float b1, float b2, float eps,
                             float lr_arg, float weight_decay, int64_t step, const StepControl* control) {
  if (!step_applies(control)) return;
  const LrDecay k = lr_decay(lr_arg, weight_decay, control);
  const float lr = k.lr, decay = k.decay;
  if (control) step = control->steps;
  const float bc1 = float(1.0 - pow(double(b1), double(step))), bc2 = float(1.0 - pow(double(b2), double(step)));
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
  control->steps += finite;
}

// Launches the partial sums of x^2 over kChunk-element chunks into partial.
void launch_sum_squares_partials(double* partial, const float* x, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  sum_squares_partial_kernel<<<static_cast<unsigned>(chunks), 256, 0, detail::stream()>>>(partial, x, n);
  NW_CUDA_LAUNCH_CHECK();
}

constexpr int64_t kNormChunk = 1 << 14;  // elements per partial sum of a matrix's Frobenius norm

// Newton–Schulz scratch for M matrices on the wide orientation (m, n), carved from the caller's
// workspace, each array 32-byte aligned: X, Y (M, m, n) and A, B (M, m, m) in float32; in bf16
// precision the bf16 operands Xh (M, m, n), Ah, Bh (M, m, m); for muon_update the update u (M, R, C).
struct NsScratch {
  float *X, *Y, *A, *B, *u;
  __nv_bfloat16 *Xh, *Ah, *Bh;
};

NsScratch carve_ns_scratch(const Tensor& workspace, int64_t M, int64_t m, int64_t n, Precision p, bool with_update) {
  char* const begin = static_cast<char*>(workspace.data);
  char* at = begin;
  auto take = [&](int64_t count, size_t elem) {
    at = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(at) + 31) & ~uintptr_t(31));
    char* r = at;
    at += count * elem;
    return r;
  };
  const bool bf16 = p == Precision::BF16;
  NsScratch s{};
  s.X = reinterpret_cast<float*>(take(M * m * n, sizeof(float)));
  // Y also holds the norm's float64 partial sums (M * P) before the first step.
  const int64_t partials = M * ((m * n + kNormChunk - 1) / kNormChunk);
  s.Y = reinterpret_cast<float*>(take(std::max(M * m * n, 2 * partials), sizeof(float)));
  s.A = reinterpret_cast<float*>(take(M * m * m, sizeof(float)));
  s.B = reinterpret_cast<float*>(take(M * m * m, sizeof(float)));
  if (bf16) {
    s.Xh = reinterpret_cast<__nv_bfloat16*>(take(M * m * n, sizeof(__nv_bfloat16)));
    s.Ah = reinterpret_cast<__nv_bfloat16*>(take(M * m * m, sizeof(__nv_bfloat16)));
    s.Bh = reinterpret_cast<__nv_bfloat16*>(take(M * m * m, sizeof(__nv_bfloat16)));
  }
  if (with_update) s.u = reinterpret_cast<float*>(take(M * m * n, sizeof(float)));
  NW_CHECK(static_cast<size_t>(at - begin) <= workspace.nbytes(), "newton_schulz: workspace of ", workspace.nbytes(),
           " bytes, needs ", at - begin);
  return s;
}

// grid (P, M): partial[mat * P + p] = the sum of squares of chunk p of u[mat] (n elements), in float64
// through a fixed tree: the same bits on every run.
__global__ void frobenius_partial_kernel(double* partial, const float* u, int64_t n, int P) {
  const float* x = u + blockIdx.y * n;
  const int64_t begin = blockIdx.x * kNormChunk, end = min(n, begin + kNormChunk);
  double s = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) s += double(x[i]) * double(x[i]);
  s = detail::block_sum(s);
  if (threadIdx.x == 0) partial[int64_t(blockIdx.y) * P + blockIdx.x] = s;
}

// grid (Q, M): X[mat] = u[mat] / (||u[mat]||_F + 1e-7), transposed to (C, R) when tall, and Xh = bf16(X)
// when given. Every block sums its matrix's P partials in the same fixed order.
__global__ void frobenius_normalize_kernel(float* X, __nv_bfloat16* Xh, const float* u, const double* partial, int P,
                                           int64_t R, int64_t C, bool tall) {
  __shared__ float inv;
  const int64_t n = R * C, mat = blockIdx.y;
  if (threadIdx.x < 32) {
    double s = 0;
    for (int q = threadIdx.x; q < P; q += 32) s += partial[mat * P + q];
    s = detail::warp_sum(s);
    if (threadIdx.x == 0) inv = static_cast<float>(1.0 / (sqrt(s) + 1e-7));
  }
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const float v = u[mat * n + i] * inv;
    const int64_t dst = mat * n + (tall ? (i % C) * R + i / C : i);
    X[dst] = v;
    if (Xh) Xh[dst] = __float2bfloat16_rn(v);
  }
}

// B = A (float32, for the b A term) and Ah = bf16(A) (the operand of A A).
__global__ void split_gram_kernel(float* B, __nv_bfloat16* Ah, const float* A, int64_t n) {
  NW_GRID_STRIDE(i, n) {
    B[i] = A[i];
    Ah[i] = __float2bfloat16_rn(A[i]);
  }
}

__global__ void to_bf16_kernel(__nv_bfloat16* dst, const float* src, int64_t n) {
  NW_GRID_STRIDE(i, n) dst[i] = __float2bfloat16_rn(src[i]);
}

// X = a X + Y, and Xh = bf16(X) when given (the next step's operand).
__global__ void ns_step_kernel(float* X, __nv_bfloat16* Xh, const float* Y, float a, int64_t n) {
  NW_GRID_STRIDE(i, n) {
    const float x = a * X[i] + Y[i];
    X[i] = x;
    if (Xh) Xh[i] = __float2bfloat16_rn(x);
  }
}

// dst[mat] (C, R) = src[mat] (R, C)^T for M matrices.
__global__ void transpose_kernel(float* dst, const float* src, int64_t M, int64_t R, int64_t C) {
  NW_GRID_STRIDE(idx, M * R * C) {
    const int64_t mat = idx / (R * C), rc = idx % (R * C), i = rc / C, j = rc % C;
    dst[mat * R * C + j * R + i] = src[idx];
  }
}

__global__ void muon_momentum_kernel(float* u, float* buf, const float* g, int64_t n, float mu, bool nesterov,
                                     const StepControl* control) {
  if (!step_applies(control)) return;
  if (control) mu = control->scalars.muon_momentum;
  NW_GRID_STRIDE(i, n) {
    const float b = mu * buf[i] + g[i];
    buf[i] = b;
    u[i] = nesterov ? g[i] + mu * b : b;
  }
}

// W = W decay - lr scale NS(u), reading NS(u) from the iterate X (stored (C, R) per matrix when tall).
__global__ void muon_apply_kernel(float* w, const float* X, int64_t M, int64_t R, int64_t C, bool tall,
                                  float lr_arg, float weight_decay, float scale, const StepControl* control) {
  if (!step_applies(control)) return;
  const LrDecay k = lr_decay(lr_arg, weight_decay, control);
  const float lr = k.lr, decay = k.decay;
  NW_GRID_STRIDE(idx, M * R * C) {
    const int64_t mat = idx / (R * C), rc = idx % (R * C);
    const float o = tall ? X[mat * R * C + (rc % C) * R + rc / C] : X[idx];
    w[idx] = w[idx] * decay - lr * scale * o;
  }
}

// Orthogonalises the M (R, C) matrices at u into s.X (wide orientation (m, n) per matrix), all M in one
// batched GEMM per product. In bf16 precision the GEMMs read bf16 copies of X, A and B, converted at the
// points where the CPU emulation rounds (csrc/cpu/optimizer_ops.cpp), and accumulate in float32.
void newton_schulz_batched(const float* u, int64_t M, int64_t R, int64_t C, int steps, Precision p,
                           const NsScratch& s) {
  constexpr float a = 3.4445f, b = -4.7750f, c = 2.0315f;
  const bool tall = R > C, bf16 = p == Precision::BF16;
  const int64_t m = tall ? C : R, n = tall ? R : C, mn = m * n, mm = m * m;
  NW_CHECK(M * mn < (int64_t(1) << 31) && M <= 65535, "newton_schulz: ", M, " matrices of ", R, "x", C,
           " are too many or too large for one batch");
  // The norm's partial sums use Y, free until the first step (carve_ns_scratch sized it for them).
  const int P = static_cast<int>((mn + kNormChunk - 1) / kNormChunk);
  double* partial = reinterpret_cast<double*>(s.Y);
  frobenius_partial_kernel<<<dim3(P, unsigned(M)), 256, 0, detail::stream()>>>(partial, u, mn, P);
  NW_CUDA_LAUNCH_CHECK();
  const unsigned q = std::min<unsigned>(detail::grid_for(mn), 1024);
  frobenius_normalize_kernel<<<dim3(q, unsigned(M)), 256, 0, detail::stream()>>>(s.X, bf16 ? s.Xh : nullptr, u, partial, P, R, C, tall);
  NW_CUDA_LAUNCH_CHECK();
  const int mi = int(m), ni = int(n), Mi = int(M);
  for (int it = 0; it < steps; ++it) {
    if (bf16) {
      gemm_bf16_strided_batched(false, true, mi, mi, ni, 1.f, s.Xh, ni, mn, s.Xh, ni, mn, 0.f, s.A, mi, mm, Mi);
      split_gram_kernel<<<detail::grid_for(M * mm), 256, 0, detail::stream()>>>(s.B, s.Ah, s.A, M * mm);
      NW_CUDA_LAUNCH_CHECK();
      gemm_bf16_strided_batched(false, false, mi, mi, mi, c, s.Ah, mi, mm, s.Ah, mi, mm, b, s.B, mi, mm, Mi);
      to_bf16_kernel<<<detail::grid_for(M * mm), 256, 0, detail::stream()>>>(s.Bh, s.B, M * mm);
      NW_CUDA_LAUNCH_CHECK();
      gemm_bf16_strided_batched(false, false, mi, ni, mi, 1.f, s.Bh, mi, mm, s.Xh, ni, mn, 0.f, s.Y, ni, mn, Mi);
    } else {
      sgemm_strided_batched(false, true, mi, mi, ni, 1.f, s.X, ni, mn, s.X, ni, mn, 0.f, s.A, mi, mm, Mi);  // A = X X^T
      NW_CUDA_CHECK(cudaMemcpyAsync(s.B, s.A, M * mm * sizeof(float), cudaMemcpyDeviceToDevice, detail::stream()));
      sgemm_strided_batched(false, false, mi, mi, mi, c, s.A, mi, mm, s.A, mi, mm, b, s.B, mi, mm, Mi);  // bA + cAA
      sgemm_strided_batched(false, false, mi, ni, mi, 1.f, s.B, mi, mm, s.X, ni, mn, 0.f, s.Y, ni, mn, Mi); // Y = B X
    }
    const bool next_operand = bf16 && it + 1 < steps;
    ns_step_kernel<<<detail::grid_for(M * mn), 256, 0, detail::stream()>>>(s.X, next_operand ? s.Xh : nullptr, s.Y, a, M * mn);
    NW_CUDA_LAUNCH_CHECK();
  }
}
}  // namespace

void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a) {
  detail::require_f32("adamw_update", {&param, &grad, &m, &v});
  const int64_t n = param.numel();
  if (n == 0) return;
  adamw_kernel<<<detail::grid_for(n), 256, 0, detail::stream()>>>(param.ptr<float>(), grad.ptr<float>(), m.ptr<float>(),
                                                                  v.ptr<float>(), n, a.beta1, a.beta2, a.eps, a.lr,
                                                                  a.weight_decay, a.step, a.control);
  NW_CUDA_LAUNCH_CHECK();
}

void newton_schulz(const Tensor& x, const Tensor& workspace, int steps, Precision p) {
  detail::require_f32("newton_schulz", {&x, &workspace});
  const int64_t R = x.size(0), C = x.size(1);
  if (R * C == 0) return;
  const NsScratch s = carve_ns_scratch(workspace, 1, std::min(R, C), std::max(R, C), p, false);
  newton_schulz_batched(x.ptr<float>(), 1, R, C, steps, p, s);
  if (R > C) {
    transpose_kernel<<<detail::grid_for(R * C), 256, 0, detail::stream()>>>(x.ptr<float>(), s.X, 1, C, R);
    NW_CUDA_LAUNCH_CHECK();
  } else {
    NW_CUDA_CHECK(cudaMemcpyAsync(x.data, s.X, R * C * sizeof(float), cudaMemcpyDeviceToDevice, detail::stream()));
  }
}

void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace,
                 const MuonArgs& a) {
  detail::require_f32("muon_update", {&param, &grad, &momentum, &workspace});
  const int64_t M = param.size(0), R = param.size(1), C = param.size(2), n = M * R * C;
  if (n == 0) return;
  const float scale = float(std::sqrt(std::max(1.0, double(R) / double(C))));
  // All M matrices in one batch, in the caller's workspace (M slots): nothing is allocated here.
  const NsScratch s = carve_ns_scratch(workspace, M, std::min(R, C), std::max(R, C), a.precision, true);
  muon_momentum_kernel<<<detail::grid_for(n), 256, 0, detail::stream()>>>(s.u, momentum.ptr<float>(), grad.ptr<float>(),
                                                                          n, a.momentum, a.nesterov, a.control);
  NW_CUDA_LAUNCH_CHECK();
  newton_schulz_batched(s.u, M, R, C, a.ns_steps, a.precision, s);
  muon_apply_kernel<<<detail::grid_for(n), 256, 0, detail::stream()>>>(param.ptr<float>(), s.X, M, R, C, R > C, a.lr,
                                                                       a.weight_decay, scale, a.control);
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
  sum_partials_kernel<<<1, 1024, 0, detail::stream()>>>(total, partial, chunks);
  NW_CUDA_LAUNCH_CHECK();
  double result = 0;
  detail::copy_to_host(&result, total, sizeof(double));
  return result;
}

void scale_inplace(const Tensor& x, float s) {
  detail::require_f32("scale_inplace", {&x});
  const int64_t n = x.numel();
  if (n == 0) return;
  scale_kernel<<<detail::grid_for(n), 256, 0, detail::stream()>>>(x.ptr<float>(), n, s);
  NW_CUDA_LAUNCH_CHECK();
}

int64_t clip_partials(int64_t n) { return std::max<int64_t>(1, (n + kChunk - 1) / kChunk); }

void clip_control(StepControl* control, double* partial, const Tensor& grads, float grad_clip) {
  detail::require_f32("clip_control", {&grads});
  const int64_t n = grads.numel();
  if (n > 0) launch_sum_squares_partials(partial, grads.ptr<float>(), n);
  clip_control_kernel<<<1, 1024, 0, detail::stream()>>>(control, partial, n > 0 ? (n + kChunk - 1) / kChunk : 0, grad_clip);
  NW_CUDA_LAUNCH_CHECK();
}

void scale_by_control(const Tensor& x, const StepControl* control) {
  detail::require_f32("scale_by_control", {&x});
  const int64_t n = x.numel();
  if (n == 0) return;
  scale_by_control_kernel<<<detail::grid_for(n), 256, 0, detail::stream()>>>(x.ptr<float>(), n, control);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
