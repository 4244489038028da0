// Matmul precision (train.precision): "fp32" computes everything in float32 (the reference mode);
// "bf16" rounds the operands of every matmul and of attention's products to bfloat16 and accumulates in
// float32, as tensor cores do. Everything else (master weights, optimizer state, softmax statistics,
// norm statistics, router, losses, reductions) stays float32 in both modes.
//
// On the CPU, bf16 mode is an emulation that rounds with round_to_bf16 at the points where the GPU
// kernels convert to bf16; values stay stored as float32. The GPU suite compares against it.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace nw {

enum class Precision : uint8_t { FP32, BF16 };

const char* precision_name(Precision p);       // "fp32" or "bf16"
Precision parse_precision(const std::string& name);  // throws on anything else

// The bfloat16 nearest to x (round to nearest, ties to even), returned as the float32 it widens to:
// bf16 is the high 16 bits of a float32. Overflow rounds to infinity and NaN stays NaN, as CUDA's
// __float2bfloat16_rn does.
inline float round_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return x;  // NaN: adding would carry into the sign bit
  u += 0x7fffu + ((u >> 16) & 1u);                // half an ulp, plus one when the kept part is odd
  u &= 0xffff0000u;
  std::memcpy(&x, &u, sizeof u);
  return x;
}

// dst[i] = round_to_bf16(src[i]) for i < n (dst may equal src).
void round_to_bf16(float* dst, const float* src, int64_t n);

}  // namespace nw
