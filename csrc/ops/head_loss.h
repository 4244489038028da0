// The LM head fused with the soft-capped cross-entropy over chunks of rows (tokens), so training and loss
// evaluation never hold the (N, V) logits: for rows [r, r + R) the head GEMM writes the chunk's logits
// (R, V) into a scratch, softcap_cross_entropy turns them into losses and, in place, dlogits, and then
// dx for those rows and the chunk's share of dW are taken at once. Peak memory is O(R * V), not O(N * V).
//
// Row chunks rather than vocabulary chunks: a vocabulary split needs an online logsumexp across chunks and
// then the logits again for the gradient (a second head GEMM, or the full logits kept); rows are
// independent, so each chunk is finished in one pass, every token's loss and dx are computed exactly as
// without chunks, and only dW sums the chunks (in a fixed order: deterministic).
#pragma once
#include <cstdint>

#include "core/precision.h"
#include "core/tensor.h"

namespace nw {
// The scratch's byte budget: rows per chunk are as many as fit (at least one), so models whose (N, V)
// logits fit in it run as one chunk.
constexpr int64_t kHeadLossChunkBytes = int64_t(256) << 20;

// Rows per chunk for N tokens over a vocabulary of V in dtype: max(1, min(N, max_bytes / (V * size))).
int64_t head_loss_chunk_rows(int64_t N, int64_t V, DType dtype, int64_t max_bytes = kHeadLossChunkBytes);

// x (N, C): the final norm's output; w (V, C): the head. Chunks have scratch.size(0) rows (the last may be
// shorter), in order. losses (N) receives each token's unweighted loss (softcap_cross_entropy's semantics:
// targets -1 ignored, weights (N) or undefined, gradient scaled by grad_per_token * w_n, grad_per_token a
// (1) tensor in x's dtype on x's device). With dx and dw defined (both or neither), dx (N, C) is
// overwritten with d(loss)/dx and dw (V, C) accumulates d(loss)/dW; without them only the losses are
// computed (grad_per_token may then be undefined). Matmul operands in `precision`.
void head_cross_entropy(const Tensor& losses /*(N)*/, const Tensor& dx /*(N, C) or undefined*/,
                        const Tensor& dw /*(V, C) or undefined*/, const Tensor& scratch /*(R, V)*/,
                        const Tensor& x /*(N, C)*/, const Tensor& w /*(V, C)*/, const Tensor& targets /*(N) i32*/,
                        const Tensor& weights /*(N) or undefined*/, float cap,
                        const Tensor& grad_per_token /*(1) or undefined*/, Precision precision);
}  // namespace nw
