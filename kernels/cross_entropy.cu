// CUDA soft-capped cross-entropy (fp32): one block per row, two passes over it. The first keeps each
// thread's running max and sum of exp (online logsumexp), merged across the block at the end; the second
// writes the gradient. The capped logit c = cap*tanh(z/cap) is recomputed in each pass instead of stored,
// every thread reads an element before writing the same element, and the target logit is read before
// the first write, so dlogits may alias logits (the head loss computes a chunk's dlogits in place).
// Each thread's order and the block reductions are fixed: the same bits run to run.
// Row n's gradient is scaled by *grad_per_token * weights[n] (weights may be null: 1); the scale is read
// from device memory, so a replayed CUDA graph uses each step's value.
// Targets of -1 give loss 0 and a zero gradient row; a target >= V (which the CPU path rejects with an
// error) gives NaN, since a kernel cannot throw.
#include "kernels/common.cuh"
#include "ops/cross_entropy.h"

namespace nw::cuda {

namespace {
constexpr int kThreads = 256;

__device__ __forceinline__ float capped(float z, float c) { return c > 0.f ? c * tanhf(z / c) : z; }

__global__ void softcap_ce_kernel(float* losses, float* dlogits, const float* logits, const int32_t* targets,
                                  const float* weights, int64_t V, float c, const float* grad_per_token) {
  const int64_t n = blockIdx.x;
  const float* z = logits + n * V;
  float* d = dlogits ? dlogits + n * V : nullptr;
  const int32_t tgt = targets[n];
  if (tgt < 0 || tgt >= V) {
    const float fill = tgt < 0 ? 0.f : NAN;
    if (threadIdx.x == 0) losses[n] = fill;
    if (d)
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) d[v] = fill;
    return;
  }
  float m = -INFINITY, s = 0.f;  // this thread's max and sum of exp(c - m)
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float r = capped(z[v], c);
    if (r > m) {
      s = s * expf(m - r) + 1.f;  // exp(-inf) = 0 for the first element
      m = r;
    } else {
      s += expf(r - m);
    }
  }
  const float mx = detail::block_max(m);
  const float sum = detail::block_sum(m == -INFINITY ? 0.f : s * expf(m - mx));  // threads without elements add 0
  const float lse = mx + logf(sum);
  const float rt = capped(z[tgt], c);  // read before any thread writes the row
  if (threadIdx.x == 0) losses[n] = lse - rt;
  if (!d) return;
  __syncthreads();
  const float g = weights ? *grad_per_token * weights[n] : *grad_per_token;
  const float inv_c2 = c > 0.f ? 1.f / (c * c) : 0.f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float r = capped(z[v], c);
    float out = c > 0.f ? expf(r - lse) * (1.f - r * r * inv_c2) * g : expf(r - lse) * g;
    if (v == tgt) out -= (c > 0.f ? 1.f - rt * rt / (c * c) : 1.f) * g;  // the one-hot term
    d[v] = out;
  }
}

__global__ void softcap_kernel(float* z, int64_t n, float c) {
  NW_GRID_STRIDE(i, n) z[i] = c * tanhf(z[i] / c);
}
}  // namespace

void softcap_cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                           const Tensor& weights, float cap, const Tensor& grad_per_token) {
  detail::require_f32("softcap_cross_entropy", {&losses, &dlogits, &logits, &weights, &grad_per_token});
  const int64_t N = logits.size(0), V = logits.size(1);
  if (N == 0) return;
  NW_CHECK(V > 0, "softcap_cross_entropy: the vocabulary is empty");
  softcap_ce_kernel<<<static_cast<unsigned>(N), kThreads, 0, detail::stream()>>>(
      losses.ptr<float>(), dlogits.defined() ? dlogits.ptr<float>() : nullptr, logits.ptr<float>(),
      targets.ptr<int32_t>(), weights.defined() ? weights.ptr<float>() : nullptr, V, cap,
      dlogits.defined() ? grad_per_token.ptr<float>() : nullptr);
  NW_CUDA_LAUNCH_CHECK();
}

void softcap(const Tensor& logits, float cap) {
  detail::require_f32("softcap", {&logits});
  const int64_t n = logits.numel();
  if (cap <= 0 || n == 0) return;
  softcap_kernel<<<detail::grid_for(n), 256, 0, detail::stream()>>>(logits.ptr<float>(), n, cap);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
