// Matmul operands for the CPU emulation of bf16 precision (core/precision.h): in bf16 mode a copy of
// the operand rounded to bf16 (kept as float32), in fp32 mode (or float64) the operand itself. The
// copies live in per-thread scratch that grows to the largest operand once and is reused after.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/precision.h"

namespace nw::cpu {

// `slot` tells apart the operands of one call (0, 1, 2, ...; at most 4 live at once).
template <typename T>
const T* bf16_operand(const T* src, int64_t n, Precision p, int slot) {
  if constexpr (std::is_same_v<T, float>) {
    if (p == Precision::BF16) {
      thread_local std::vector<float> scratch[4];
      std::vector<float>& s = scratch[slot];
      if (static_cast<int64_t>(s.size()) < n) s.resize(n);
      round_to_bf16(s.data(), src, n);
      return s.data();
    }
  }
  return src;
}

// Rounds a row-major block of `rows` rows, `cols` wide, `ld` apart, in place (bf16 mode, float only).
template <typename T>
void round_block_to_bf16(T* a, int64_t rows, int64_t cols, int64_t ld, Precision p) {
  if constexpr (std::is_same_v<T, float>) {
    if (p == Precision::BF16)
      for (int64_t r = 0; r < rows; ++r) round_to_bf16(a + r * ld, a + r * ld, cols);
  }
}

}  // namespace nw::cpu
