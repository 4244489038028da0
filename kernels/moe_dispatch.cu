// CUDA MoE dispatch (counting sort of (token, slot) pairs by expert) and the gather / combine that
// move rows, all deterministic without atomics:
// - dispatch: a stable CUB radix sort of the expert ids with the flat slot index p = n*K + k as the
//   value puts each expert's slots together in increasing p (token order, then slot order), exactly
//   the CPU's cursor order; row r of the sorted buffer is slot sorted_p[r]. offsets[e] is the first
//   sorted position whose id is >= e (a binary search: the exclusive scan of the histogram), and
//   counts[e] = offsets[e+1] - offsets[e]. Expert ids must lie in [0, E) (the CPU path checks this).
// - gather backward and combine sum each token's K rows in slot order inside one thread;
//   combine backward reduces each dot product in one warp with a fixed shuffle tree.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/common.cuh"
#include "ops/moe_dispatch.h"

namespace nw::cuda {

namespace {
__global__ void iota_kernel(int32_t* v, int64_t n) {
  NW_GRID_STRIDE(i, n) v[i] = static_cast<int32_t>(i);
}

__device__ int32_t lower_bound(const int32_t* keys, int32_t n, int32_t value) {
  int32_t lo = 0, hi = n;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (keys[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

__global__ void offsets_kernel(int32_t* counts, int32_t* offsets, const int32_t* sorted_ids, int32_t NK, int32_t E) {
  for (int32_t e = blockIdx.x * blockDim.x + threadIdx.x; e <= E; e += blockDim.x * gridDim.x) {
    const int32_t begin = lower_bound(sorted_ids, NK, e);
    offsets[e] = begin;
    if (e < E) counts[e] = lower_bound(sorted_ids, NK, e + 1) - begin;
  }
}

__global__ void invert_kernel(int32_t* row_of_slot, int32_t* token_of_row, const int32_t* sorted_slot, int32_t NK,
                              int32_t K) {
  NW_GRID_STRIDE(r, NK) {
    const int32_t p = sorted_slot[r];
    row_of_slot[p] = static_cast<int32_t>(r);
    token_of_row[r] = p / K;
  }
}

__global__ void gather_kernel(float* xe, const float* x, const int32_t* token_of_row, int64_t R, int64_t C) {
  NW_GRID_STRIDE(i, R * C) xe[i] = x[int64_t(token_of_row[i / C]) * C + i % C];
}

__global__ void gather_backward_kernel(float* dx, const float* dxe, const int32_t* row_of_slot, int64_t N, int64_t K,
                                       int64_t C) {
  NW_GRID_STRIDE(i, N * C) {
    const int64_t n = i / C, c = i % C;
    float acc = dx[i];
    for (int64_t k = 0; k < K; ++k) acc += dxe[int64_t(row_of_slot[n * K + k]) * C + c];
    dx[i] = acc;
  }
}

__global__ void combine_kernel(float* y, const float* ye, const float* gates, const int32_t* row_of_slot, int64_t N,
                               int64_t K, int64_t C) {
  NW_GRID_STRIDE(i, N * C) {
    const int64_t n = i / C, c = i % C;
    float acc = 0.f;
    for (int64_t k = 0; k < K; ++k) acc += gates[n * K + k] * ye[int64_t(row_of_slot[n * K + k]) * C + c];
    y[i] = acc;
  }
}

// One warp per (token, slot): dye[r] = g * dy[n]; dgates[n, k] = <dy[n], ye[r]>.
__global__ void combine_backward_kernel(float* dye, float* dgates, const float* dy, const float* ye,
                                        const float* gates, const int32_t* row_of_slot, int64_t NK, int64_t K,
                                        int64_t C) {
  const int64_t p = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (p >= NK) return;
  const int64_t n = p / K, r = row_of_slot[p];
  const float g = gates[p];
  const float* d = dy + n * C;
  const float* e = ye + r * C;
  float* out = dye + r * C;
  float acc = 0.f;
  for (int64_t c = lane; c < C; c += 32) {
    out[c] = g * d[c];
    acc += d[c] * e[c];
  }
  acc = detail::warp_sum(acc);
  if (lane == 0) dgates[p] = acc;
}
}  // namespace

void moe_dispatch(const Tensor& counts, const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row,
                  const Tensor& topk) {
  const int64_t NK64 = topk.numel(), E64 = counts.size(0), K = topk.size(1);
  NW_CHECK(NK64 < (int64_t(1) << 31) && E64 < (int64_t(1) << 30), "moe_dispatch: too many slots or experts");
  const int32_t NK = static_cast<int32_t>(NK64), E = static_cast<int32_t>(E64);
  if (NK == 0) {
    NW_CUDA_CHECK(cudaMemsetAsync(counts.data, 0, counts.nbytes(), detail::stream()));
    NW_CUDA_CHECK(cudaMemsetAsync(offsets.data, 0, offsets.nbytes(), detail::stream()));
    return;
  }
  int end_bit = 1;
  while (end_bit < 31 && (int64_t(1) << end_bit) < E) ++end_bit;  // ids are in [0, E)
  size_t temp_bytes = 0;
  NW_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), NK, 0, end_bit, detail::stream()));
  const size_t head = (3 * static_cast<size_t>(NK) * sizeof(int32_t) + 255) / 256 * 256;
  detail::Scratch scratch(head + temp_bytes);
  int32_t* slots = scratch.as<int32_t>();
  int32_t* sorted_ids = slots + NK;
  int32_t* sorted_slots = sorted_ids + NK;
  void* temp = scratch.as<char>() + head;
  iota_kernel<<<detail::grid_for(NK), 256, 0, detail::stream()>>>(slots, NK);
  NW_CUDA_LAUNCH_CHECK();
  NW_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, topk.ptr<int32_t>(), sorted_ids, slots, sorted_slots,
                                                NK, 0, end_bit, detail::stream()));
  offsets_kernel<<<detail::grid_for(E + 1), 256, 0, detail::stream()>>>(counts.ptr<int32_t>(), offsets.ptr<int32_t>(), sorted_ids, NK, E);
  NW_CUDA_LAUNCH_CHECK();
  invert_kernel<<<detail::grid_for(NK), 256, 0, detail::stream()>>>(row_of_slot.ptr<int32_t>(), token_of_row.ptr<int32_t>(), sorted_slots,
                                               NK, static_cast<int32_t>(K));
  NW_CUDA_LAUNCH_CHECK();
}

void moe_gather(const Tensor& xe, const Tensor& x, const Tensor& token_of_row) {
  detail::require_f32("moe_gather", {&xe, &x});
  const int64_t R = xe.size(0), C = xe.size(1);
  if (R * C == 0) return;
  gather_kernel<<<detail::grid_for(R * C), 256, 0, detail::stream()>>>(xe.ptr<float>(), x.ptr<float>(), token_of_row.ptr<int32_t>(), R, C);
  NW_CUDA_LAUNCH_CHECK();
}

void moe_gather_backward(const Tensor& dx, const Tensor& dxe, const Tensor& row_of_slot) {
  detail::require_f32("moe_gather_backward", {&dx, &dxe});
  const int64_t N = dx.size(0), C = dx.size(1), K = row_of_slot.size(0) / N;
  if (N * C == 0) return;
  gather_backward_kernel<<<detail::grid_for(N * C), 256, 0, detail::stream()>>>(dx.ptr<float>(), dxe.ptr<float>(),
                                                           row_of_slot.ptr<int32_t>(), N, K, C);
  NW_CUDA_LAUNCH_CHECK();
}

void moe_combine(const Tensor& y, const Tensor& ye, const Tensor& gates, const Tensor& row_of_slot) {
  detail::require_f32("moe_combine", {&y, &ye, &gates});
  const int64_t N = y.size(0), C = y.size(1), K = gates.size(1);
  if (N * C == 0) return;
  combine_kernel<<<detail::grid_for(N * C), 256, 0, detail::stream()>>>(y.ptr<float>(), ye.ptr<float>(), gates.ptr<float>(),
                                                   row_of_slot.ptr<int32_t>(), N, K, C);
  NW_CUDA_LAUNCH_CHECK();
}

void moe_combine_backward(const Tensor& dye, const Tensor& dgates, const Tensor& dy, const Tensor& ye,
                          const Tensor& gates, const Tensor& row_of_slot) {
  detail::require_f32("moe_combine_backward", {&dye, &dgates, &dy, &ye, &gates});
  const int64_t N = dy.size(0), C = dy.size(1), K = gates.size(1), NK = N * K;
  if (NK == 0) return;
  const int threads = 256, warps_per_block = threads / 32;
  combine_backward_kernel<<<static_cast<unsigned>((NK + warps_per_block - 1) / warps_per_block), threads, 0, detail::stream()>>>(
      dye.ptr<float>(), dgates.ptr<float>(), dy.ptr<float>(), ye.ptr<float>(), gates.ptr<float>(),
      row_of_slot.ptr<int32_t>(), NK, K, C);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
