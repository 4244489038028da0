// Device memory for the CUDA backend. The op entry points are declared beside each op
// (csrc/ops/<op>.h, namespace nw::cuda). A CPU-only build links kernels/cpu_only_stub.cpp instead
// of the .cu files, so every CUDA entry point throws there.
#pragma once
#include <cstddef>

namespace nw::cuda {

bool available();  // built with CUDA and a usable device present
void synchronize();  // waits for all work on the current device
void* device_alloc(size_t nbytes);
void device_free(void* p);
void device_memset_zero(void* p, size_t nbytes);
void copy_host_to_device(void* dst, const void* src, size_t nbytes);
void copy_device_to_host(void* dst, const void* src, size_t nbytes);
void copy_device_to_device(void* dst, const void* src, size_t nbytes);

}  // namespace nw::cuda
