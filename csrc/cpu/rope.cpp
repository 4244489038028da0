// CPU rotary embedding: rotate pairs (i, i + D/2) by the position's angle.
#include <cmath>

#include "ops/rope.h"

namespace nw::cpu {

template <typename T>
static void rotate(const Tensor& x, const Tensor& cos, const Tensor& sin, T sign) {
  const int64_t B = x.size(0), Tn = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  T* xp = x.ptr<T>();
  const T* cp = cos.ptr<T>();
  const T* sp = sin.ptr<T>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < Tn; ++t)
      for (int64_t h = 0; h < H; ++h) {
        T* v = xp + ((b * Tn + t) * H + h) * D;
        const T* c = cp + t * half;
        const T* s = sp + t * half;
        for (int64_t i = 0; i < half; ++i) {
          const T x1 = v[i], x2 = v[i + half], si = sign * s[i];
          v[i] = x1 * c[i] + x2 * si;
          v[i + half] = -x1 * si + x2 * c[i];
        }
      }
}

template <typename T>
void rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin) { rotate<T>(x, cos, sin, T(1)); }

template <typename T>
void rope_backward(const Tensor& dx, const Tensor& cos, const Tensor& sin) { rotate<T>(dx, cos, sin, T(-1)); }

template <typename T>
void rope_tables(const Tensor& cos, const Tensor& sin, double base) {
  const int64_t Tn = cos.size(0), half = cos.size(1);
  for (int64_t t = 0; t < Tn; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(t) * std::pow(base, -static_cast<double>(i) / static_cast<double>(half));
      cos.ptr<T>()[t * half + i] = static_cast<T>(std::cos(angle));
      sin.ptr<T>()[t * half + i] = static_cast<T>(std::sin(angle));
    }
}

#define INSTANTIATE(T)                                                              \
  template void rope_forward<T>(const Tensor&, const Tensor&, const Tensor&);       \
  template void rope_backward<T>(const Tensor&, const Tensor&, const Tensor&);      \
  template void rope_tables<T>(const Tensor&, const Tensor&, double);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace nw::cpu
