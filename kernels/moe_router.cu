// CUDA MoE router (fp32), the same arithmetic in the same order as csrc/cpu/moe_router.cpp:
// - one thread per token: s = sigmoid(z), the top-k of s + bias picked one by one with the lowest
//   index winning ties (a strict '>' scan, as on the CPU), then the renormalised gates;
// - one block per sequence for the balance loss: thread e sums P_e over the sequence's tokens in
//   token order and counts the tokens choosing e; thread 0 sums the per-expert terms in expert order
//   (float64). moe_router_forward copies the per-sequence losses to the host and sums them there in
//   sequence order (one small device-to-host copy per call); moe_route sums them on the device.
// - the backward recomputes the per-sequence fractions f (one block per sequence), then one thread
//   per token writes its row of dlogits.
// moe_route fuses the dispatch into the same chain, nothing read by the host and no atomics:
// - the selection's blocks are tiles of kTile tokens; each block also counts its tile's slots per
//   expert (thread e walks the tile's slots in order);
// - one block scans the tile counts: thread e gives each tile, in tile order, its first row among the
//   rows of expert e, and the expert's count; thread 0 then scans the counts in expert order (offsets);
// - one block per tile places the slots: thread e walks the tile's slots in order and hands those
//   choosing e consecutive rows from offsets[e] + the tile's first row. Rows inside an expert follow
//   the flat slot index p = n*K + k, exactly the CPU's counting sort (csrc/cpu/moe_dispatch.cpp).
#include <vector>

#include "kernels/common.cuh"
#include "ops/moe_router.h"
#include "ops/optimizer_ops.h"

namespace nw::cuda {

namespace {
constexpr int kTile = 128;  // tokens per block of the selection kernel, one thread each

// Selects one token's experts (see the file comment).
__device__ void select_experts(float* scores, int32_t* topk, float* gates, float* totals, const float* logits,
                               const float* bias, int64_t n, int64_t E, int64_t K, float route_scale) {
  float* s = scores + n * E;
  const float* z = logits + n * E;
  float total = 0.f;
  for (int64_t e = 0; e < E; ++e) {
    const float v = 1.f / (1.f + expf(-z[e]));
    s[e] = v;
    total += v;
  }
  totals[n] = total;
  // Pick j: the CPU's strict-'>' scan over the experts not taken yet (those in idx[0, j)). A NaN score
  // compares false both ways, so the scan keeps its first candidate as the CPU does and every pick is an
  // expert in [0, E), each taken once (a token with NaN logits still routes to K distinct experts).
  int32_t* idx = topk + n * K;
  float chosen_sum = 0.f;
  for (int64_t j = 0; j < K; ++j) {
    int64_t best = -1;
    float best_v = 0.f;
    for (int64_t e = 0; e < E; ++e) {
      bool taken = false;
      for (int64_t i = 0; i < j; ++i) taken = taken || idx[i] == e;
      if (taken) continue;
      const float v = s[e] + bias[e];
      if (best < 0 || v > best_v) {
        best = e;
        best_v = v;
      }
    }
    idx[j] = static_cast<int32_t>(best);
    chosen_sum += s[best];
  }
  for (int64_t j = 0; j < K; ++j) gates[n * K + j] = s[idx[j]] / chosen_sum * route_scale;
}

// One thread per token, blocks of kTile tokens. With tile_counts (tiles, E), block t also writes how many of
// its tile's slots chose each expert.
__global__ void router_select_kernel(float* scores, int32_t* topk, float* gates, float* totals, int32_t* tile_counts,
                                     const float* logits, const float* bias, int64_t N, int64_t E, int64_t K,
                                     float route_scale) {
  const int64_t n = blockIdx.x * int64_t(kTile) + threadIdx.x;
  if (n < N) select_experts(scores, topk, gates, totals, logits, bias, n, E, K, route_scale);
  if (!tile_counts) return;
  __syncthreads();  // the tile's top-k rows are written
  const int64_t p0 = blockIdx.x * int64_t(kTile) * K, p1 = min(N, (blockIdx.x + 1) * int64_t(kTile)) * K;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int32_t count = 0;
    for (int64_t p = p0; p < p1; ++p) count += topk[p] == e;
    tile_counts[blockIdx.x * E + e] = count;
  }
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
                                       float route_scale, float balance_alpha, const float* grad_scale,
                                       int64_t batch) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  // d(balance)/d s_{t,i} = c * (f_i / S_t - sum_j f_j s_{t,j} / S_t^2), c = alpha / (B T) * grad_scale
  const float c = balance_alpha * *grad_scale / float(batch * Tn);
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

// balance[0] += alpha * (the sequences' losses summed in sequence order) / batch: moe_router_forward's host sum.
__global__ void balance_accumulate_kernel(double* balance, const double* seq_loss, int batch, float balance_alpha) {
  double loss = 0;
  for (int b = 0; b < batch; ++b) loss += seq_loss[b];
  balance[0] += balance_alpha * loss / batch;
}

// One block. tile_first[t, e] = rows of expert e in tiles before t; counts[e] = all of them; offsets = the
// exclusive scan of counts in expert order.
__global__ void dispatch_scan_kernel(int32_t* counts, int32_t* offsets, int32_t* tile_first, const int32_t* tile_counts,
                                     int64_t tiles, int64_t E) {
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int32_t total = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      tile_first[t * E + e] = total;
      total += tile_counts[t * E + e];
    }
    counts[e] = total;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  offsets[0] = 0;
  for (int64_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + counts[e];
}

// One block per tile: the tile's slots choosing e get consecutive rows of expert e, in slot order.
__global__ void dispatch_place_kernel(int32_t* row_of_slot, int32_t* token_of_row, const int32_t* topk,
                                      const int32_t* offsets, const int32_t* tile_first, int64_t N, int64_t E,
                                      int64_t K) {
  const int64_t p0 = blockIdx.x * int64_t(kTile) * K, p1 = min(N, (blockIdx.x + 1) * int64_t(kTile)) * K;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int32_t row = offsets[e] + tile_first[blockIdx.x * E + e];
    for (int64_t p = p0; p < p1; ++p)
      if (topk[p] == e) {
        row_of_slot[p] = row;
        token_of_row[row] = static_cast<int32_t>(p / K);
        ++row;
      }
  }
}

// One block: mean of the counts in float64 (expert order), then bias_e += gamma * sign(mean - count_e),
// thread t updating the experts e = t (mod blockDim.x).
__device__ void update_bias_block(float* bias, const int64_t* counts, int64_t E, float gamma) {
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

__global__ void update_bias_kernel(float* bias, const int64_t* counts, int64_t E, float gamma) {
  update_bias_block(bias, counts, E, gamma);
}

// The optimizer step's update (ops/moe_router.h), skipped as a whole when the step does not apply.
__global__ void balance_step_kernel(float* bias, int64_t* pending, int64_t* step_counts, int64_t E,
                                    const StepControl* control) {
  if (!control->apply) return;
  update_bias_block(bias, pending, E, control->scalars.balance_gamma);
  // Each thread moves the counts it has just read (the same experts): no barrier needed.
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    step_counts[e] = pending[e];
    pending[e] = 0;
  }
}
__global__ void accumulate_counts_kernel(int64_t* total, const int32_t* counts, int64_t E) {
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) total[e] += counts[e];
}

// The selection (scores, topk, gates, per-token totals; tile_counts when not null) and the per-sequence losses.
void select_and_balance(double* seq_loss, float* totals, int32_t* tile_counts, const Tensor& scores, const Tensor& topk,
                        const Tensor& gates, const Tensor& logits, const Tensor& bias, int batch, float route_scale) {
  const int64_t N = logits.size(0), E = logits.size(1), K = topk.size(1), Tn = N / batch;
  NW_CHECK(E <= 4096, "the CUDA MoE router takes at most 4096 experts, got ", E);
  router_select_kernel<<<static_cast<unsigned>((N + kTile - 1) / kTile), kTile, 0, detail::stream()>>>(
      scores.ptr<float>(), topk.ptr<int32_t>(), gates.ptr<float>(), totals, tile_counts, logits.ptr<float>(),
      bias.ptr<float>(), N, E, K, route_scale);
  NW_CUDA_LAUNCH_CHECK();
  router_balance_kernel<<<static_cast<unsigned>(batch), 128, E * sizeof(double), detail::stream()>>>(seq_loss, scores.ptr<float>(), totals,
                                                                                   topk.ptr<int32_t>(), Tn, E, K);
  NW_CUDA_LAUNCH_CHECK();
}
}  // namespace

double moe_router_forward(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& logits,
                          const Tensor& bias, int batch, float route_scale, float balance_alpha) {
  detail::require_f32("moe_router_forward", {&scores, &gates, &logits, &bias});
  const int64_t N = logits.size(0);
  if (N == 0) return 0.0;
  detail::Scratch scratch(N * sizeof(float) + batch * sizeof(double) + 16);
  double* seq_loss = scratch.as<double>();
  float* totals = reinterpret_cast<float*>(seq_loss + batch);
  select_and_balance(seq_loss, totals, nullptr, scores, topk, gates, logits, bias, batch, route_scale);
  std::vector<double> host(batch);
  detail::copy_to_host(host.data(), seq_loss, batch * sizeof(double));
  double loss = 0;
  for (double l : host) loss += l;
  return balance_alpha * loss / batch;
}

void moe_route(const Tensor& scores, const Tensor& topk, const Tensor& gates, const Tensor& counts,
               const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row, const Tensor& balance,
               const Tensor& logits, const Tensor& bias, int batch, float route_scale, float balance_alpha) {
  detail::require_f32("moe_route", {&scores, &gates, &logits, &bias});
  const int64_t N = logits.size(0), E = logits.size(1), K = topk.size(1), tiles = (N + kTile - 1) / kTile;
  if (N == 0) {
    NW_CUDA_CHECK(cudaMemsetAsync(counts.data, 0, counts.nbytes(), detail::stream()));
    NW_CUDA_CHECK(cudaMemsetAsync(offsets.data, 0, offsets.nbytes(), detail::stream()));
    return;
  }
  NW_CHECK(N * K < (int64_t(1) << 31), "moe_route: ", N * K, " slots exceed the int32 rows");
  // Scratch: per-sequence losses (batch doubles), per-token score totals (N floats), the tiles' per-expert
  // counts and first rows ((tiles, E) int32 each).
  const size_t loss_bytes = size_t(batch) * sizeof(double), total_bytes = (size_t(N) * sizeof(float) + 7) / 8 * 8;
  detail::Scratch scratch(loss_bytes + total_bytes + 2 * size_t(tiles * E) * sizeof(int32_t));
  double* seq_loss = scratch.as<double>();
  float* totals = reinterpret_cast<float*>(scratch.as<char>() + loss_bytes);
  int32_t* tile_counts = reinterpret_cast<int32_t*>(scratch.as<char>() + loss_bytes + total_bytes);
  int32_t* tile_first = tile_counts + tiles * E;
  select_and_balance(seq_loss, totals, tile_counts, scores, topk, gates, logits, bias, batch, route_scale);
  balance_accumulate_kernel<<<1, 1, 0, detail::stream()>>>(balance.ptr<double>(), seq_loss, batch, balance_alpha);
  NW_CUDA_LAUNCH_CHECK();
  dispatch_scan_kernel<<<1, 256, 0, detail::stream()>>>(counts.ptr<int32_t>(), offsets.ptr<int32_t>(), tile_first, tile_counts, tiles, E);
  NW_CUDA_LAUNCH_CHECK();
  dispatch_place_kernel<<<static_cast<unsigned>(tiles), kTile, 0, detail::stream()>>>(
      row_of_slot.ptr<int32_t>(), token_of_row.ptr<int32_t>(), topk.ptr<int32_t>(), offsets.ptr<int32_t>(),
      tile_first, N, E, K);
  NW_CUDA_LAUNCH_CHECK();
}

void moe_router_backward(const Tensor& dlogits, const Tensor& dgates, const Tensor& scores, const Tensor& topk,
                         int batch, float route_scale, float balance_alpha, const Tensor& grad_scale) {
  detail::require_f32("moe_router_backward", {&dlogits, &dgates, &scores, &grad_scale});
  const int64_t N = scores.size(0), E = scores.size(1), K = topk.size(1), Tn = N / batch;
  if (N == 0) return;
  detail::Scratch fractions(batch * E * sizeof(float));
  router_fractions_kernel<<<static_cast<unsigned>(batch), 128, 0, detail::stream()>>>(fractions.as<float>(), topk.ptr<int32_t>(), Tn, E, K);
  NW_CUDA_LAUNCH_CHECK();
  const int threads = 128;
  router_backward_kernel<<<static_cast<unsigned>((N + threads - 1) / threads), threads, 0, detail::stream()>>>(
      dlogits.ptr<float>(), dgates.ptr<float>(), scores.ptr<float>(), topk.ptr<int32_t>(), fractions.as<float>(), N,
      Tn, E, K, route_scale, balance_alpha, grad_scale.ptr<float>(), batch);
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
    NW_CUDA_CHECK(cudaMemcpyAsync(copy.as<int64_t>(), counts.ptr<int64_t>(), E * sizeof(int64_t), cudaMemcpyHostToDevice,
                                  detail::stream()));
    dev_counts = copy.as<int64_t>();
  } else {
    dev_counts = counts.ptr<int64_t>();
  }
  update_bias_kernel<<<1, 256, 0, detail::stream()>>>(bias.ptr<float>(), dev_counts, E, gamma);
  NW_CUDA_LAUNCH_CHECK();
}

void moe_balance_step(const Tensor& bias, const Tensor& pending, const Tensor& step_counts,
                      const StepControl* control) {
  detail::require_f32("moe_balance_step", {&bias});
  const int64_t E = bias.size(0);
  if (E == 0) return;
  balance_step_kernel<<<1, 256, 0, detail::stream()>>>(bias.ptr<float>(), pending.ptr<int64_t>(),
                                                       step_counts.ptr<int64_t>(), E, control);
  NW_CUDA_LAUNCH_CHECK();
}

void moe_accumulate_counts(const Tensor& total, const Tensor& counts) {
  const int64_t E = total.size(0);
  if (E == 0) return;
  accumulate_counts_kernel<<<1, 256, 0, detail::stream()>>>(total.ptr<int64_t>(), counts.ptr<int32_t>(), E);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
