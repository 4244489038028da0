// CUDA MoE router (fp32), the same arithmetic in the same order as csrc/cpu/moe_router.cpp:
// - one thread per token: s = sigmoid(z), the top-k of s + bias picked one by one with the lowest
//   index winning ties (a strict '>' scan, as on the CPU), then the renormalised gates;
// - one block per sequence for the balance loss: thread e sums P_e over the sequence's tokens in
//   token order and counts the tokens choosing e; thread 0 sums the per-expert terms in expert order
//   (float64). The per-sequence losses are copied to the host and summed there in sequence order,
//   so the returned loss has the CPU's summation order (one small device-to-host copy per call).
// - the backward recomputes the per-sequence fractions f (one block per sequence), then one thread
//   per token writes its row of dlogits.
#include <vector>

#include "kernels/common.cuh"
#include "ops/moe_router.h"

namespace nw::cuda {

namespace {
__global__ void router_select_kernel(float* scores, int32_t* topk, float* gates, float* totals, const float* logits,
                                     const float* bias, int64_t N, int64_t E, int64_t K, float route_scale) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  float* s = scores + n * E;
  const float* z = logits + n * E;
  float total = 0.f;
  for (int64_t e = 0; e < E; ++e) {
    const float v = 1.f / (1.f + expf(-z[e]));
    s[e] = v;
    total += v;
  }
  totals[n] = total;
  // Pick j is the best expert strictly after pick j-1 in the order (s + b descending, index ascending):
  // the CPU's repeated strict-'>' scan over the experts not taken yet.
  int32_t* idx = topk + n * K;
  float chosen_sum = 0.f, prev_v = 0.f;
  int64_t prev = -1;
  for (int64_t j = 0; j < K; ++j) {
    int64_t best = -1;
    float best_v = 0.f;
    for (int64_t e = 0; e < E; ++e) {
      const float v = s[e] + bias[e];
      const bool after_prev = prev < 0 || v < prev_v || (v == prev_v && e > prev);
      if (after_prev && (best < 0 || v > best_v)) {
        best = e;
        best_v = v;
      }
    }
    idx[j] = static_cast<int32_t>(best);
    chosen_sum += s[best];
    prev = best;
    prev_v = best_v;
  }
  for (int64_t j = 0; j < K; ++j) gates[n * K + j] = s[idx[j]] / chosen_sum * route_scale;
}

// f_e = E/(K T) * (the sequence's slots choosing e), as a float like the CPU's sequence_fractions.
__device__ float sequence_fraction(const int32_t* topk_seq, int64_t Tn, int64_t E, int64_t K, int64_t e) {
  float count = 0.f;
  for (int64_t i = 0; i < Tn * K; ++i) count += topk_seq[i] == e ? 1.f : 0.f;
  return count * (float(E) / float(K * Tn));
}

// One block per sequence; dynamic shared memory holds E doubles.
__global__ void router_balance_kernel(double* seq_loss, const float* scores, const float* totals, const int32_t* topk,
                                      int64_t Tn, int64_t E, int64_t K) {
  extern __shared__ double terms[];
  const int64_t b = blockIdx.x;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    float P = 0.f;
    for (int64_t n = b * Tn; n < (b + 1) * Tn; ++n) P += scores[n * E + e] / totals[n];
    const float f = sequence_fraction(topk + b * Tn * K, Tn, E, K, e);
    terms[e] = static_cast<double>(f) * static_cast<double>(P / float(Tn));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double l = 0;
    for (int64_t e = 0; e < E; ++e) l += terms[e];
    seq_loss[b] = l;
  }
}

__global__ void router_fractions_kernel(float* f, const int32_t* topk, int64_t Tn, int64_t E, int64_t K) {
  const int64_t b = blockIdx.x;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) f[b * E + e] = sequence_fraction(topk + b * Tn * K, Tn, E, K, e);
}

__global__ void router_backward_kernel(float* dlogits, const float* dgates, const float* scores, const int32_t* topk,
                                       const float* fractions, int64_t N, int64_t Tn, int64_t E, int64_t K,
                                       float route_scale, float c) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  const float* s = scores + n * E;
  const float* f = fractions + (n / Tn) * E;
  const int32_t* idx = topk + n * K;
  float* d = dlogits + n * E;
  float total = 0.f, fs = 0.f;
  for (int64_t e = 0; e < E; ++e) {
    total += s[e];
    fs += f[e] * s[e];
  }
  for (int64_t e = 0; e < E; ++e) d[e] = c * (f[e] / total - fs / (total * total));
  // gates g_j = rs * s_j / S_sel  =>  ds_j = rs / S_sel * (dg_j - sum_i dg_i s_i / S_sel)
  float chosen_sum = 0.f, weighted = 0.f;
  for (int64_t j = 0; j < K; ++j) {
    chosen_sum += s[idx[j]];
    weighted += dgates[n * K + j] * s[idx[j]];
  }
  for (int64_t j = 0; j < K; ++j) d[idx[j]] += route_scale / chosen_sum * (dgates[n * K + j] - weighted / chosen_sum);
  for (int64_t e = 0; e < E; ++e) d[e] *= s[e] * (1.f - s[e]);  // through the sigmoid
}

// One block: mean of the counts in float64 (expert order), then bias_e += gamma * sign(mean - count_e).
__global__ void update_bias_kernel(float* bias, const int64_t* counts, int64_t E, float gamma) {
  __shared__ double mean;
  if (threadIdx.x == 0) {
    double m = 0;
    for (int64_t e = 0; e < E; ++e) m += static_cast<double>(counts[e]);
    mean = m / static_cast<double>(E);
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    const double gap = mean - static_cast<double>(counts[e]);
    bias[e] += gamma * float((gap > 0) - (gap < 0));
  }
}
__global__ void accumulate_counts_kernel(int64_t* total, const int32_t* counts, int64_t E) {
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) total[e] += counts[e];
}
}  // namespace

double moe_router_forward(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& logits,
                          const Tensor& bias, int batch, float route_scale, float balance_alpha) {
  detail::require_f32("moe_router_forward", {&scores, &gates, &logits, &bias});
  const int64_t N = logits.size(0), E = logits.size(1), K = topk.size(1), Tn = N / batch;
  if (N == 0) return 0.0;
  NW_CHECK(E <= 4096, "moe_router_forward: at most 4096 experts on CUDA, got ", E);
  detail::Scratch scratch(N * sizeof(float) + batch * sizeof(double) + 16);
  double* seq_loss = scratch.as<double>();
  float* totals = reinterpret_cast<float*>(seq_loss + batch);
  const int threads = 128;
  router_select_kernel<<<static_cast<unsigned>((N + threads - 1) / threads), threads>>>(
      scores.ptr<float>(), topk.ptr<int32_t>(), gates.ptr<float>(), totals, logits.ptr<float>(), bias.ptr<float>(), N,
      E, K, route_scale);
  NW_CUDA_LAUNCH_CHECK();
  router_balance_kernel<<<static_cast<unsigned>(batch), 128, E * sizeof(double)>>>(seq_loss, scores.ptr<float>(), totals,
                                                                                   topk.ptr<int32_t>(), Tn, E, K);
  NW_CUDA_LAUNCH_CHECK();
  std::vector<double> host(batch);
  NW_CUDA_CHECK(cudaMemcpy(host.data(), seq_loss, batch * sizeof(double), cudaMemcpyDeviceToHost));
  double loss = 0;
  for (double l : host) loss += l;
  return balance_alpha * loss / batch;
}

void moe_router_backward(const Tensor& dlogits, const Tensor& dgates, const Tensor& scores, const Tensor& topk,
                         int batch, float route_scale, float balance_alpha, float grad_scale) {
  detail::require_f32("moe_router_backward", {&dlogits, &dgates, &scores});
  const int64_t N = scores.size(0), E = scores.size(1), K = topk.size(1), Tn = N / batch;
  if (N == 0) return;
  // d(balance)/d s_{t,i} = c * (f_i / S_t - sum_j f_j s_{t,j} / S_t^2), c = alpha / (B T) * grad_scale
  const float c = balance_alpha * grad_scale / float(batch * Tn);
  detail::Scratch fractions(batch * E * sizeof(float));
  router_fractions_kernel<<<static_cast<unsigned>(batch), 128>>>(fractions.as<float>(), topk.ptr<int32_t>(), Tn, E, K);
  NW_CUDA_LAUNCH_CHECK();
  const int threads = 128;
  router_backward_kernel<<<static_cast<unsigned>((N + threads - 1) / threads), threads>>>(
      dlogits.ptr<float>(), dgates.ptr<float>(), scores.ptr<float>(), topk.ptr<int32_t>(), fractions.as<float>(), N,
      Tn, E, K, route_scale, c);
  NW_CUDA_LAUNCH_CHECK();
}

void moe_update_bias(const Tensor& bias, const Tensor& counts, float gamma) {
  detail::require_f32("moe_update_bias", {&bias});
  const int64_t E = bias.size(0);
  if (E == 0) return;
  // The counts are summed on the host today (int64, CPU); they are copied to the device here. A
  // device-resident counts tensor is used as is.
  const int64_t* dev_counts = nullptr;
  detail::Scratch copy(counts.device == Device::CPU ? E * sizeof(int64_t) : 0);
  if (counts.device == Device::CPU) {
    NW_CUDA_CHECK(cudaMemcpy(copy.as<int64_t>(), counts.ptr<int64_t>(), E * sizeof(int64_t), cudaMemcpyHostToDevice));
    dev_counts = copy.as<int64_t>();
  } else {
    dev_counts = counts.ptr<int64_t>();
  }
  update_bias_kernel<<<1, 256>>>(bias.ptr<float>(), dev_counts, E, gamma);
  NW_CUDA_LAUNCH_CHECK();
}

void moe_accumulate_counts(const Tensor& total, const Tensor& counts) {
  const int64_t E = total.size(0);
  if (E == 0) return;
  accumulate_counts_kernel<<<1, 256>>>(total.ptr<int64_t>(), counts.ptr<int32_t>(), E);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
