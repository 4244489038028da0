// A counter-based RNG: value i of stream s under seed k is a pure function hash(k, s, i), so any
// element can be generated independently, in any order, on any device, with identical results.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

namespace nw {

// SplitMix64 finaliser: a strong 64-bit mix (passes BigCrush when fed a counter).
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline uint64_t rng_bits(uint64_t seed, uint64_t stream, uint64_t i) {
  return mix64(mix64(seed ^ mix64(stream + 0x9e3779b97f4a7c15ULL)) + i);
}

// Uniform in (0, 1): 53 random bits, never exactly 0, so log() is safe.
inline double rng_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
  return (static_cast<double>(rng_bits(seed, stream, i) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Standard normal by Box–Muller from two uniforms of the same stream.
inline double rng_normal(uint64_t seed, uint64_t stream, uint64_t i) {
  double u1 = rng_uniform(seed, stream, 2 * i), u2 = rng_uniform(seed, stream, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// A stable stream id for a name (FNV-1a), so a parameter's init does not depend on layout order.
inline uint64_t stream_of(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

}  // namespace nw
