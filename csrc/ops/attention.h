// Causal self-attention with grouped-query heads (H query heads share H/KVH key/value heads) and an
// optional sliding window (window > 0: position t sees t-window+1 .. t). Softmax scale 1/sqrt(D).
// The forward keeps the log-sum-exp per row so the backward recomputes probabilities instead of
// storing (T, T) matrices.
#pragma once
#include "core/precision.h"
#include "core/tensor.h"

namespace nw {
void attention_forward(const Tensor& y /*(B, T, H, D)*/, const Tensor& lse /*(B, H, T)*/,
                       const Tensor& q /*(B, T, H, D)*/, const Tensor& k /*(B, T, KVH, D)*/,
                       const Tensor& v /*(B, T, KVH, D)*/, int window, Precision precision = Precision::FP32);
// Decoding with a KV cache: q (B, Tq, H, D) holds the last Tq positions of sequences whose keys and
// values fill the first kv_len rows of k, v (B, Tcap, KVH, D); query i sits at position kv_len-Tq+i.
void attention_forward_kv(const Tensor& y /*(B, Tq, H, D)*/, const Tensor& q, const Tensor& k, const Tensor& v,
                          int64_t kv_len, int window, Precision precision = Precision::FP32);
// dq, dk, dv are overwritten.
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dy, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& y, const Tensor& lse, int window,
                        Precision precision = Precision::FP32);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void attention_forward(const Tensor& y, const Tensor& lse,
    const Tensor& q, const Tensor& k,
    const Tensor& v, int window, Precision p);
template <typename T>
void attention_forward_kv(const Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v,
    int64_t kv_len, int window, Precision p);
template <typename T>
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dy, const Tensor& q,
    const Tensor& k, const Tensor& v, const Tensor& y, const Tensor& lse, int window, Precision p);
}  // namespace cpu
namespace cuda {
void attention_forward_kv(const Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v,
    int64_t kv_len, int window, Precision p);
void attention_forward(const Tensor& y, const Tensor& lse,
    const Tensor& q, const Tensor& k,
    const Tensor& v, int window, Precision p);
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dy, const Tensor& q,
    const Tensor& k, const Tensor& v, const Tensor& y, const Tensor& lse, int window, Precision p);
}  // namespace cuda
}  // namespace nw
