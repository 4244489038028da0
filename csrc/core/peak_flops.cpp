#include "core/peak_flops.h"

#include <omp.h>

#include <chrono>
#include <vector>

#include "core/error.h"

namespace nw {

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
typedef float vec __attribute__((vector_size(kLanes * sizeof(float))));

// 16 independent accumulators: enough chains in flight to cover FMA latency x issue width on current cores.
constexpr int kChains = 16;
constexpr long kInner = 1 << 14;

// Runs blocks of kInner iterations until `seconds` pass; returns FLOPs done and sets `elapsed`.
double fma_loop(double seconds, float seed, double& elapsed, float& sink) {
  vec acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = vec{} + (seed + c * 1e-3f);
  const vec mul = vec{} + 0.999999f;  // keeps the values bounded: acc -> add / (1 - mul)
  const vec add = vec{} + 1e-6f;
  const auto t0 = std::chrono::steady_clock::now();
  long blocks = 0;
  for (;;) {
    for (long i = 0; i < kInner; ++i) {
#pragma GCC unroll 16
      for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * mul + add;  // contracted to one FMA (-ffp-contract=fast)
    }
    ++blocks;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (elapsed >= seconds) break;
  }
  float s = 0;
  for (int c = 0; c < kChains; ++c)
    for (int l = 0; l < kLanes; ++l) s += acc[c][l];
  sink = s;  // the result is used, so the loop cannot be removed
  return 2.0 * kLanes * kChains * double(kInner) * double(blocks);
}

}  // namespace

int peak_flops_vector_width() { return kLanes; }

double measure_peak_flops(int threads, double seconds) {
  NW_CHECK(threads >= 1, "threads must be >= 1, got ", threads);
  NW_CHECK(seconds > 0 && seconds <= 60, "seconds must be in (0, 60], got ", seconds);
  std::vector<double> rate(threads, 0.0);
  std::vector<float> sink(threads, 0.0f);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    double elapsed = 0;
    const double flops = fma_loop(seconds, 1.0f + t, elapsed, sink[t]);
    rate[t] = flops / elapsed;
  }
  double total = 0;
  for (int t = 0; t < threads; ++t) total += rate[t] + 0.0 * sink[t];
  return total;
}

}  // namespace nw
