// Helpers shared by the CUDA kernels: argument checks, launch sizes, deterministic warp/block
// reductions and scratch memory (the step workspace's, else stream-ordered). Everything runs on the
// device's compute stream (kernels/stream.cuh), so kernels, cuBLAS calls and copies are ordered without
// explicit synchronisation.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <mutex>

#include "core/tensor.h"
#include "kernels/cuda_check.cuh"
#include "kernels/stream.cuh"

// Checks the most recent kernel launch (bad configuration, missing kernel image for this GPU).
#define NW_CUDA_LAUNCH_CHECK() NW_CUDA_CHECK(cudaGetLastError())

namespace nw::cuda::detail {

// The CUDA kernels take float32 tensors (bf16 precision converts operands inside: kernels/bf16.cuh).
inline void require_f32(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->defined())
      NW_CHECK(t->dtype == DType::F32, op, ": the CUDA kernels compute in float32, got ", t->describe(),
               " (float64 runs on the CPU backend only)");
}

// Blocks for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, int threads = 256) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > (1 << 20) ? (1 << 20) : blocks));
}

#define NW_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(blockDim.x) * gridDim.x)

// Fixed shuffle trees: the same inputs give the same bits on every run.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum / max returned to every thread; blockDim.x must be a multiple of 32 (<= 1024).
// The order is fixed by blockDim, so results are run-to-run identical.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T part[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  T t = lane < warps ? part[lane] : T(0);
  return warp_sum(t);
}
__device__ inline float block_max(float v) {
  __shared__ float part[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float t = lane < warps ? part[lane] : -INFINITY;
  return warp_max(t);
}

// Keeps freed stream-ordered memory in the device's pool instead of returning it to the driver at
// every synchronisation, so scratch allocations after the first step cost no driver call.
inline void keep_pool_memory() {
  static std::mutex mu;
  static bool done[64] = {};
  int dev = 0;
  NW_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (dev < 0 || dev >= 64 || done[dev]) return;
  cudaMemPool_t pool;
  NW_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
  uint64_t threshold = UINT64_MAX;
  NW_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  done[dev] = true;
}

// The step workspace's side of Scratch (kernels/step_workspace.cu): a buffer from the open workspace's
// block, or nullptr (none open, or the block too small) with *counted saying whether the request counted
// toward the workspace's peak; the give-back of a counted buffer (p nullptr when the pool served it).
void* take_step_scratch(size_t nbytes, bool* counted);
void give_back_step_scratch(void* p, size_t nbytes);
void count_pool_allocation();

// Scratch device memory for one op call (ops whose interface has no workspace argument: sorting,
// per-block partial sums, bf16 operand copies): from the step workspace while a training step has it
// open (core/step_workspace.h), else allocated and freed in stream order on the compute stream
// (cudaMallocAsync: no device synchronisation, served from the pool after warm-up).
class Scratch {
 public:
  explicit Scratch(size_t nbytes) : nbytes_(nbytes) {
    if (nbytes == 0) return;
    p_ = take_step_scratch(nbytes, &counted_);
    if (p_) {
      from_workspace_ = true;
      return;
    }
    keep_pool_memory();
    try {
      NW_CUDA_CHECK(cudaMallocAsync(&p_, nbytes, stream()));
    } catch (...) {  // no destructor runs: undo the count here
      if (counted_) give_back_step_scratch(nullptr, nbytes);
      throw;
    }
    count_pool_allocation();
  }
  ~Scratch() {  // never throws: destructors
    if (counted_) give_back_step_scratch(from_workspace_ ? p_ : nullptr, nbytes_);
    if (p_ && !from_workspace_) cudaFreeAsync(p_, stream());
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
  size_t nbytes_;
  bool counted_ = false, from_workspace_ = false;
};

}  // namespace nw::cuda::detail
