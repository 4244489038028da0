// Dropless MoE dispatch by counting sort: each (token, slot) pair gets a row in an expert-sorted
// buffer so each expert's rows are contiguous, in token order within an expert. Combine sums each
// token's K expert outputs in slot order: no atomics, bit-identical for any thread count.
#pragma once
#include "core/tensor.h"

namespace nw {
// topk (N, K) i32 -> counts (E) i32, offsets (E+1) i32 (exclusive scan), row_of_slot (N*K) i32,
// token_of_row (N*K) i32.
void moe_dispatch(const Tensor& counts, const Tensor& offsets, const Tensor& row_of_slot,
                  const Tensor& token_of_row, const Tensor& topk);
// xe[r] = x[token_of_row[r]].
void moe_gather(const Tensor& xe /*(N*K, C)*/, const Tensor& x /*(N, C)*/, const Tensor& token_of_row);
// dx[n] += sum_k dxe[row_of_slot[n, k]], k in order.
void moe_gather_backward(const Tensor& dx, const Tensor& dxe, const Tensor& row_of_slot);
// y[n] = sum_k gates[n, k] * ye[row_of_slot[n, k]] (overwrites y).
void moe_combine(const Tensor& y /*(N, C)*/, const Tensor& ye /*(N*K, C)*/, const Tensor& gates /*(N, K)*/,
                 const Tensor& row_of_slot);
// dye[row_of_slot[n,k]] = gates[n,k] * dy[n]; dgates[n,k] = <dy[n], ye[row_of_slot[n,k]]>.
void moe_combine_backward(const Tensor& dye, const Tensor& dgates, const Tensor& dy, const Tensor& ye,
                          const Tensor& gates, const Tensor& row_of_slot);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
void moe_dispatch(const Tensor& counts, const Tensor& offsets, const Tensor& row_of_slot,
    const Tensor& token_of_row, const Tensor& topk);
template <typename T>
void moe_gather(const Tensor& xe, const Tensor& x, const Tensor& token_of_row);
template <typename T>
void moe_gather_backward(const Tensor& dx, const Tensor& dxe, const Tensor& row_of_slot);
template <typename T>
void moe_combine(const Tensor& y, const Tensor& ye, const Tensor& gates,
    const Tensor& row_of_slot);
template <typename T>
void moe_combine_backward(const Tensor& dye, const Tensor& dgates, const Tensor& dy, const Tensor& ye,
    const Tensor& gates, const Tensor& row_of_slot);
}  // namespace cpu
namespace cuda {
void moe_dispatch(const Tensor& counts, const Tensor& offsets, const Tensor& row_of_slot,
    const Tensor& token_of_row, const Tensor& topk);
void moe_gather(const Tensor& xe, const Tensor& x, const Tensor& token_of_row);
void moe_gather_backward(const Tensor& dx, const Tensor& dxe, const Tensor& row_of_slot);
void moe_combine(const Tensor& y, const Tensor& ye, const Tensor& gates,
    const Tensor& row_of_slot);
void moe_combine_backward(const Tensor& dye, const Tensor& dgates, const Tensor& dy, const Tensor& ye,
    const Tensor& gates, const Tensor& row_of_slot);
}  // namespace cuda
}  // namespace nw
