// Tensor views: a pointer plus dtype, device, shape and strides (in elements). Views never own
// memory (see buffer.h). Views made here are row-major contiguous; ops check contiguity rather than
// assume it, so a strided view reaching an op is a clear error, not a wrong answer.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/error.h"

namespace nw {

enum class DType : uint8_t { F32, F64, BF16, I32, I64 };
enum class Device : uint8_t { CPU, CUDA };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }

constexpr int kMaxDims = 4;

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};
  int64_t strides[kMaxDims] = {0, 0, 0, 0};

  Tensor() = default;
  Tensor(void* data, DType dtype, Device device, std::initializer_list<int64_t> dims);
  Tensor(void* data, DType dtype, Device device, const std::vector<int64_t>& dims);

  int64_t numel() const;
  int64_t size(int d) const { return shape[d < 0 ? d + ndim : d]; }
  bool defined() const { return data != nullptr; }
  bool contiguous() const;
  size_t nbytes() const { return numel() * dtype_size(dtype); }
  std::vector<int64_t> dims() const { return std::vector<int64_t>(shape, shape + ndim); }
  std::string describe() const;  // e.g. "f32[4, 128] on cpu"

  template <typename T> T* ptr() const {
    NW_ASSERT(dtype == dtype_of<T>(), "tensor is ", dtype_name(dtype), ", not ", dtype_name(dtype_of<T>()));
    return static_cast<T*>(data);
  }
  // The same memory seen with another shape of equal element count.
  Tensor view(std::initializer_list<int64_t> dims) const;
  // The leading elements of this tensor seen with a (smaller or equal) shape: scratch buffers.
  Tensor first(std::initializer_list<int64_t> dims) const;
  // Rows [begin, end) along dimension 0.
  Tensor slice_rows(int64_t begin, int64_t end) const;
};

// Argument checks shared by every op: a clear ValueError naming the op and the argument.
void check_tensor(const Tensor& t, const char* op, const char* arg, DType dtype, Device device,
                  std::initializer_list<int64_t> shape);
void check_same(const Tensor& a, const Tensor& b, const char* op);

}  // namespace nw
