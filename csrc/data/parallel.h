// A minimal parallel-for over an index range for the data code (std::thread; dynamic scheduling).
#pragma once
#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>
#include <vector>

namespace nw::data {

inline int resolve_threads(int n) {
  if (n > 0) return n;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Runs f(i) for i in [0, n) on up to `threads` threads; rethrows the first exception.
template <typename F>
void parallel_for(size_t n, int threads, F&& f) {
  threads = static_cast<int>(std::min<size_t>(resolve_threads(threads), std::max<size_t>(n, 1)));
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr err;
  std::atomic<bool> failed{false};
  auto work = [&] {
    try {
      for (size_t i; !failed && (i = next.fetch_add(1)) < n;) f(i);
    } catch (...) {
      if (!failed.exchange(true)) err = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (err) std::rethrow_exception(err);
}

}  // namespace nw::data
