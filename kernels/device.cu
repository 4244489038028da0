// The GPU device interface (csrc/core/cuda_device.h) on the CUDA runtime, and the compute stream
// (kernels/stream.cuh) that every call below runs on.
#include <atomic>
#include <cstring>
#include <mutex>

#include "core/cuda_device.h"
#include "kernels/cuda_check.cuh"
#include "kernels/stream.cuh"

namespace nw::cuda {

namespace detail {

cudaStream_t stream() {
  // Streams live until the process ends, as the cuBLAS handles do: destroying them from a static
  // destructor can run after the CUDA runtime has shut down.
  constexpr int kMaxDevices = 64;
  static std::atomic<cudaStream_t> streams[kMaxDevices] = {};
  static std::mutex mu;
  int dev = 0;
  NW_CUDA_CHECK(cudaGetDevice(&dev));
  NW_CHECK(dev >= 0 && dev < kMaxDevices, "compute stream: device index ", dev, " is out of range");
  cudaStream_t s = streams[dev].load(std::memory_order_acquire);
  if (s) return s;
  std::lock_guard<std::mutex> lock(mu);
  s = streams[dev].load(std::memory_order_relaxed);
  if (!s) {
    NW_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamDefault));
    streams[dev].store(s, std::memory_order_release);
  }
  return s;
}

void copy_to_host(void* dst, const void* src, size_t n) {
  if (!n) return;
  NW_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream()));
  NW_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

}  // namespace detail

bool available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void synchronize() { NW_CUDA_CHECK(cudaDeviceSynchronize()); }

void* device_alloc(size_t nbytes) {
  void* p = nullptr;
  NW_CUDA_CHECK(cudaMalloc(&p, nbytes));
  return p;
}

void device_free(void* p) { cudaFree(p); }  // never throws: called from destructors

void device_memset_zero(void* p, size_t nbytes) {
  if (nbytes) NW_CUDA_CHECK(cudaMemsetAsync(p, 0, nbytes, detail::stream()));
}

// Pageable host memory: cudaMemcpyAsync stages the source before it returns, so the caller may reuse it.
void copy_host_to_device(void* dst, const void* src, size_t n) {
  if (n) NW_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, detail::stream()));
}

void copy_device_to_host(void* dst, const void* src, size_t n) { detail::copy_to_host(dst, src, n); }

void copy_device_to_device(void* dst, const void* src, size_t n) {
  if (n) NW_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, detail::stream()));
}

void* pinned_alloc(size_t nbytes) {
  void* p = nullptr;
  NW_CUDA_CHECK(cudaMallocHost(&p, nbytes));
  return p;
}

void pinned_free(void* p) { cudaFreeHost(p); }  // never throws: called from destructors
void copy_host_to_device_async(void* dst, const void* pinned_src, size_t n) {
  NW_CUDA_CHECK(cudaMemcpyAsync(dst, pinned_src, n, cudaMemcpyHostToDevice, detail::stream()));
}

namespace {
// stage_host_to_device's pinned slots. Never freed: the process exit reclaims them, and a destructor
// could run after the CUDA runtime has shut down.
struct StagingRing {
  static constexpr int kSlots = 16;  // a few micro-batches of tokens, targets, weights and scalars
  struct Slot {
    void* host = nullptr;
    size_t capacity = 0;
    cudaEvent_t copied = nullptr;  // recorded after the copy out of this slot
  };
  std::mutex mu;
  Slot slots[kSlots];
  int next = 0;
};
StagingRing& staging_ring() {
  static StagingRing* ring = new StagingRing;
  return *ring;
}
}  // namespace

void stage_host_to_device(void* dst, const void* src, size_t n) {
  if (n == 0) return;
  StagingRing& ring = staging_ring();
  std::lock_guard<std::mutex> lock(ring.mu);
  StagingRing::Slot& slot = ring.slots[ring.next];
  ring.next = (ring.next + 1) % StagingRing::kSlots;
  if (slot.copied) NW_CUDA_CHECK(cudaEventSynchronize(slot.copied));  // its last copy has left the slot
  else NW_CUDA_CHECK(cudaEventCreateWithFlags(&slot.copied, cudaEventDisableTiming));
  if (slot.capacity < n) {  // grows to the largest copy, so a fixed batch shape allocates only at first
    pinned_free(slot.host);
    slot.host = nullptr;
    slot.capacity = 0;
    slot.host = pinned_alloc(n);
    slot.capacity = n;
  }
  std::memcpy(slot.host, src, n);
  NW_CUDA_CHECK(cudaMemcpyAsync(dst, slot.host, n, cudaMemcpyHostToDevice, detail::stream()));
  NW_CUDA_CHECK(cudaEventRecord(slot.copied, detail::stream()));
}

}  // namespace nw::cuda
