// CUDA embedding (fp32). The forward copies rows. The backward is deterministic without atomics:
// a stable radix sort groups token positions by id (equal ids keep position order), then one block
// per run of equal ids adds that run's gradient rows into the table row in position order -- the same
// order, and so the same float sums, as csrc/cpu/embedding.cpp.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/common.cuh"
#include "ops/embedding.h"

namespace nw::cuda {

namespace {
__global__ void embedding_forward_kernel(float* out, const float* table, const int32_t* tokens, int64_t N, int64_t C) {
  NW_GRID_STRIDE(i, N * C) out[i] = table[int64_t(tokens[i / C]) * C + i % C];
}

__global__ void iota_kernel(int32_t* v, int64_t n) {
  NW_GRID_STRIDE(i, n) v[i] = static_cast<int32_t>(i);
}

// Block i handles sorted position i if it starts a run of equal ids; other blocks exit at once.
__global__ void embedding_backward_kernel(float* dtable, const float* dout, const int32_t* sorted_tok,
                                          const int32_t* sorted_pos, int64_t N, int64_t C) {
  const int64_t i = blockIdx.x;
  const int32_t tok = sorted_tok[i];
  if (i > 0 && sorted_tok[i - 1] == tok) return;
  int64_t end = i + 1;
  while (end < N && sorted_tok[end] == tok) ++end;
  float* row = dtable + int64_t(tok) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = row[c];
    for (int64_t j = i; j < end; ++j) acc += dout[int64_t(sorted_pos[j]) * C + c];
    row[c] = acc;
  }
}
}  // namespace

void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) {
  detail::require_f32("embedding_forward", {&out, &table});
  const int64_t N = out.size(0), C = out.size(1);
  if (N * C == 0) return;
  embedding_forward_kernel<<<detail::grid_for(N * C), 256, 0, detail::stream()>>>(out.ptr<float>(), table.ptr<float>(),
                                                             tokens.ptr<int32_t>(), N, C);
  NW_CUDA_LAUNCH_CHECK();
}

void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& tokens) {
  detail::require_f32("embedding_backward", {&dtable, &dout});
  const int64_t N = dout.size(0), C = dout.size(1), V = dtable.size(0);
  if (N == 0 || C == 0) return;
  NW_CHECK(N < (int64_t(1) << 31), "embedding_backward: too many tokens (", N, ")");
  int end_bit = 1;
  while (end_bit < 31 && (int64_t(1) << end_bit) < V) ++end_bit;  // ids are in [0, V)
  // Scratch: positions, sorted ids, sorted positions, then CUB's temporary storage.
  size_t temp_bytes = 0;
  NW_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), static_cast<int>(N), 0, end_bit,
                                                detail::stream()));
  const size_t ints = 3 * static_cast<size_t>(N);
  detail::Scratch scratch(ints * sizeof(int32_t) + temp_bytes + 256);
  int32_t* pos = scratch.as<int32_t>();
  int32_t* sorted_tok = pos + N;
  int32_t* sorted_pos = sorted_tok + N;
  void* temp = reinterpret_cast<char*>(scratch.as<char>()) + (ints * sizeof(int32_t) + 255) / 256 * 256;
  iota_kernel<<<detail::grid_for(N), 256, 0, detail::stream()>>>(pos, N);
  NW_CUDA_LAUNCH_CHECK();
  NW_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, tokens.ptr<int32_t>(), sorted_tok, pos, sorted_pos,
                                                static_cast<int>(N), 0, end_bit, detail::stream()));
  embedding_backward_kernel<<<static_cast<unsigned>(N), 128, 0, detail::stream()>>>(dtable.ptr<float>(), dout.ptr<float>(), sorted_tok,
                                                               sorted_pos, N, C);
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
