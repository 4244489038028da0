// The GPU device interface (csrc/core/cuda_device.h) on the CUDA runtime.
#include "core/cuda_device.h"
#include "kernels/cuda_check.cuh"

namespace nw::cuda {

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
void device_memset_zero(void* p, size_t nbytes) { NW_CUDA_CHECK(cudaMemset(p, 0, nbytes)); }
void copy_host_to_device(void* dst, const void* src, size_t n) { NW_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice)); }
void copy_device_to_host(void* dst, const void* src, size_t n) { NW_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost)); }
void copy_device_to_device(void* dst, const void* src, size_t n) {
  if (n) NW_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice));
}

}  // namespace nw::cuda
