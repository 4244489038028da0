#include "core/profiler.h"

#include <atomic>
#include <mutex>

#include "core/cuda_device.h"

namespace nw::profiler {

namespace {
std::atomic<bool> g_enabled{false};
std::mutex g_mutex;
std::vector<OpTime>& table() {
  static std::vector<OpTime> t;
  return t;
}
}  // namespace

void set_enabled(bool on) { g_enabled = on; }
bool enabled() { return g_enabled; }

void reset() {
  std::lock_guard<std::mutex> lock(g_mutex);
  table().clear();
}

std::vector<OpTime> snapshot() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return table();
}

void record(const char* op, double seconds) {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (OpTime& t : table())
    if (t.op == op) {
      t.seconds += seconds;
      t.calls += 1;
      return;
    }
  table().push_back({op, seconds, 1});
}

Scope::Scope(const char* op, Device device) : op_(op), device_(device), on_(enabled()) {
  if (!on_) return;
  if (device_ == Device::CUDA) cuda::synchronize();
  start_ = std::chrono::steady_clock::now();
}

Scope::~Scope() {
  if (!on_) return;
  try {
    if (device_ == Device::CUDA) cuda::synchronize();
  } catch (...) {  // a destructor must not throw; the op's own error (if any) is already on its way
  }
  record(op_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
}

}  // namespace nw::profiler
