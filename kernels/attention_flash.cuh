// Attention on tensor cores (bf16 precision, training shapes: Tq == Tk), called by kernels/attention.cu.
#pragma once
#include <cstdint>

namespace nw::cuda {

// One training call's shapes: q, dq, y, dy (B, T, H, D); k, v, dk, dv (B, T, KVH, D); lse, delta (B, H, T).
struct FlashShape {
  int64_t B, T, H, KVH, D;
};

// Whether the tensor-core kernels serve this head dim (multiples of 16 they are instantiated for).
bool flash_attention_supports(int64_t D);

// y and lse (= max + log(sum) per row) of softmax(scale Q K^T, causal, window) V.
void flash_attention_forward(float* y, float* lse, const float* q, const float* k, const float* v,
                             const FlashShape& s, int window);

// dq, dk, dv (overwritten) from dy, the forward's lse and delta = rowsum(bf16(dy) * y).
void flash_attention_backward(float* dq, float* dk, float* dv, const float* dy, const float* q, const float* k,
                              const float* v, const float* lse, const float* delta, const FlashShape& s, int window);

}  // namespace nw::cuda
