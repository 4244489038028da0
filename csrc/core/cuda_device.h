// The GPU device interface the core and the bindings use: queries, allocation, copies and stream order.
// Declared here and implemented by the backend, as the ops are (csrc/ops/<op>.h): kernels/device.cu in a
// CUDA build, kernels/cpu_only_stub.cpp in a CPU-only build (available() is false, device_free does
// nothing, every other call throws "built without CUDA").
#pragma once
#include <cstddef>

namespace nw::cuda {

// Queries.
bool available();  // built with CUDA and a usable device present

// Allocation (device memory; zeroing runs in stream order).
void* device_alloc(size_t nbytes);
void device_free(void* p);  // never throws: called from destructors
void device_memset_zero(void* p, size_t nbytes);

// Copies, in stream order. Host to device returns once the source is read (the host may reuse it at
// once) without waiting for the device; device to host waits for the work queued before it.
void copy_host_to_device(void* dst, const void* src, size_t nbytes);
void copy_device_to_host(void* dst, const void* src, size_t nbytes);
void copy_device_to_device(void* dst, const void* src, size_t nbytes);

// Pinned (page-locked) host memory, the source of copies that run in stream order without blocking the
// host: the memory must stay unchanged until the copy has run on the device.
void* pinned_alloc(size_t nbytes);
void pinned_free(void* p);  // never throws: called from destructors
void copy_host_to_device_async(void* dst, const void* pinned_src, size_t nbytes);
// Host -> device through pinned memory owned here, for a training step's inputs: src is copied at once into
// a pinned staging slot (the caller may reuse it on return), and from there to dst in stream order. (A copy
// from pageable memory may wait for the stream when the driver has to stage it.) The slots form a small
// ring; a slot is refilled only once the copy out of it has completed, so the host waits only when it runs
// that many copies ahead of the device.
void stage_host_to_device(void* dst, const void* src, size_t nbytes);

// Streams: every kernel, copy and collective of a device runs on its one compute stream, in issue order
// (kernels/stream.cuh), so the host waits for the device only here and in the device-to-host copies.
void synchronize();  // waits for all work on the current device

}  // namespace nw::cuda
