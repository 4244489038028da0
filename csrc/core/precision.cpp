#include "core/precision.h"

#include "core/error.h"

namespace nw {

const char* precision_name(Precision p) { return p == Precision::BF16 ? "bf16" : "fp32"; }

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::FP32;
  if (name == "bf16") return Precision::BF16;
  NW_CHECK(false, "precision must be 'fp32' or 'bf16', got '", name, "'");
  return Precision::FP32;
}

void round_to_bf16(float* dst, const float* src, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) dst[i] = round_to_bf16(src[i]);
}

}  // namespace nw
