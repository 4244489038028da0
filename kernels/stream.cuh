// The compute stream: every kernel, cuBLAS call, copy, scratch allocation and collective of a device runs
// on its one stream, in issue order, so they need no synchronisation between them. It is a created
// stream, not the legacy default one, because only created streams can be captured into a CUDA graph
// (core/cuda_graph.h); it is created blocking, so any stray work on the legacy stream still orders with it.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace nw::cuda::detail {

cudaStream_t stream();  // the current device's compute stream (created on first use, kept until exit)

// Copies n bytes from the device to the host after the work queued before it: the host waits here.
void copy_to_host(void* dst, const void* src, size_t n);

}  // namespace nw::cuda::detail
