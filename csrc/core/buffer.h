// Owning device memory. Buffers are allocated once (model construction, first batch shape) and
// reused, so a training step never allocates.
#pragma once
#include <cstddef>

#include "core/tensor.h"

namespace nw {

class Buffer {
 public:
  Buffer() = default;
  Buffer(size_t nbytes, Device device);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  void zero();

 private:
  void release();
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_ = Device::CPU;
};

// Copies between host and a tensor's device (host<->host is a memcpy).
void copy_to_host(void* dst, const Tensor& src);
void copy_from_host(const Tensor& dst, const void* src);
// The same without waiting for the device (the CPU: a memcpy); src may be reused on return
// (cuda::stage_host_to_device).
void stage_from_host(const Tensor& dst, const void* src);

}  // namespace nw

namespace nw {
// Device-agnostic fills and copies between tensors of equal size on the same device.
void zero_tensor(const Tensor& t);
void copy_tensor(const Tensor& dst, const Tensor& src);
}  // namespace nw
