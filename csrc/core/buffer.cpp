#include "core/buffer.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "core/cuda_device.h"

namespace nw {

namespace {
constexpr size_t kAlign = 64;  // one cache line; also enough for AVX-512 loads
}

Buffer::Buffer(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (nbytes == 0) return;
  if (device == Device::CPU) {
    data_ = std::aligned_alloc(kAlign, (nbytes + kAlign - 1) / kAlign * kAlign);
    if (!data_) throw std::bad_alloc();
  } else {
    data_ = cuda::device_alloc(nbytes);
  }
  zero();
}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), nbytes_(std::exchange(o.nbytes_, 0)), device_(o.device_) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    nbytes_ = std::exchange(o.nbytes_, 0);
    device_ = o.device_;
  }
  return *this;
}

void Buffer::release() {
  if (!data_) return;
  if (device_ == Device::CPU) std::free(data_);
  else cuda::device_free(data_);
  data_ = nullptr;
}

void Buffer::zero() {
  if (!data_) return;
  if (device_ == Device::CPU) std::memset(data_, 0, nbytes_);
  else cuda::device_memset_zero(data_, nbytes_);
}

void copy_to_host(void* dst, const Tensor& src) {
  if (src.device == Device::CPU) std::memcpy(dst, src.data, src.nbytes());
  else cuda::copy_device_to_host(dst, src.data, src.nbytes());
}

void copy_from_host(const Tensor& dst, const void* src) {
  if (dst.device == Device::CPU) std::memcpy(dst.data, src, dst.nbytes());
  else cuda::copy_host_to_device(dst.data, src, dst.nbytes());
}

void stage_from_host(const Tensor& dst, const void* src) {
  if (dst.device == Device::CPU) std::memcpy(dst.data, src, dst.nbytes());
  else cuda::stage_host_to_device(dst.data, src, dst.nbytes());
}

}  // namespace nw

namespace nw {

void zero_tensor(const Tensor& t) {
  if (t.device == Device::CPU) std::memset(t.data, 0, t.nbytes());
  else cuda::device_memset_zero(t.data, t.nbytes());
}

void copy_tensor(const Tensor& dst, const Tensor& src) {
  NW_ASSERT(dst.nbytes() == src.nbytes() && dst.device == src.device, "copy_tensor: ", dst.describe(), " <- ",
            src.describe());
  if (src.device == Device::CPU) std::memcpy(dst.data, src.data, src.nbytes());
  else cuda::copy_device_to_device(dst.data, src.data, src.nbytes());
}

}  // namespace nw
