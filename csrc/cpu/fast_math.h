// exp and tanh for float32 loops that the compiler can vectorise (glibc's vector math is only
// declared under -ffast-math, which nanowhale does not use). Cephes-style: range reduction plus a
// minimax polynomial, within 2 ulp of libm over the range that matters (tests/cpp/test_fast_math.cpp).
// NaN in gives NaN out. The float64 versions are libm itself: the gradient-check oracle stays exact.
#pragma once
#include <cmath>
#include <cstdint>

namespace nw::cpu {

template <typename T> inline T exp_fast(T x) { return std::exp(x); }
template <typename T> inline T tanh_fast(T x) { return std::tanh(x); }

template <>
inline float exp_fast<float>(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);  // keeps 2^n a normal float (NaN passes through)
  // n = round(x / ln 2) by the 1.5 * 2^23 trick: vectorises, unlike std::floor without -ffast-math.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;            // ln 2 split in two parts for an exact product
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  return p * __builtin_bit_cast(float, bits);
}

template <>
inline float tanh_fast<float>(float x) {
  const float a = std::fabs(x);
  // small |x|: odd polynomial; large |x|: 1 - 2 / (exp(2|x|) + 1), saturating at 1 beyond 9
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float big = 1.0f - 2.0f / (exp_fast(2.0f * (a > 9.0f ? 9.0f : a)) + 1.0f);  // NaN stays NaN
  return a < 0.625f ? small : std::copysign(big, x);
}

}  // namespace nw::cpu
