// Per-op wall-clock totals, off by default. Each op opens a Scope; when profiling is on, the scope
// adds its duration (after a device synchronisation on CUDA, so the time is the op's own) to a table
// keyed by op name. Benchmarks read the table for their per-op breakdown.
#pragma once
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace nw::profiler {

struct OpTime {
  std::string op;
  double seconds = 0;
  int64_t calls = 0;
};

void set_enabled(bool on);
bool enabled();
void reset();
std::vector<OpTime> snapshot();  // ops in first-seen order
void record(const char* op, double seconds);

class Scope {
 public:
  Scope(const char* op, Device device);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* op_;
  Device device_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace nw::profiler
