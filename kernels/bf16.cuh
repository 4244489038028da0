// bf16 precision (core/precision.h) on the CUDA backend: the rounding the CPU emulation does with
// round_to_bf16, on the device (__float2bfloat16_rn: round to nearest even, the same bits), and
// stream-ordered bf16 copies of float32 operands.
#pragma once
#include <cuda_bf16.h>

#include "core/precision.h"
#include "kernels/common.cuh"

namespace nw::cuda {

__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// dst[i] = bf16(src[i]) for i < n, on the compute stream.
void to_bf16(__nv_bfloat16* dst, const float* src, int64_t n);
// dst[i] = round_bf16(src[i]): bf16 values kept in float32, for the kernels that compute in float32.
void round_to_bf16(float* dst, const float* src, int64_t n);

// An operand of a kernel that computes in float32: in bf16 precision a scratch copy of `src` rounded to
// bf16 (freed in stream order after the kernels that read it), in fp32 precision `src` itself.
class Bf16RoundedOperand {
 public:
  Bf16RoundedOperand(const Tensor& src, Precision p)
      : mem_(p == Precision::BF16 ? src.nbytes() : 0), t_(src) {
    if (p != Precision::BF16 || src.numel() == 0) return;
    t_.data = mem_.as<float>();
    round_to_bf16(mem_.as<float>(), src.ptr<float>(), src.numel());
  }
  const Tensor& t() const { return t_; }

 private:
  detail::Scratch mem_;
  Tensor t_;
};

// A bf16 copy of a float32 operand, for tensor-core GEMMs.
class Bf16Copy {
 public:
  explicit Bf16Copy(const Tensor& src) : mem_(src.numel() * sizeof(__nv_bfloat16)) {
    if (src.numel()) to_bf16(mem_.as<__nv_bfloat16>(), src.ptr<float>(), src.numel());
  }
  const __nv_bfloat16* data() const { return mem_.as<__nv_bfloat16>(); }

 private:
  detail::Scratch mem_;
};

}  // namespace nw::cuda
