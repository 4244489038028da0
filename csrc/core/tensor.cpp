#include "core/tensor.h"

#include <sstream>

namespace nw {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::BF16: return "bfloat16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
  }
  return "?";
}

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

Tensor::Tensor(void* data_, DType dtype_, Device device_, std::initializer_list<int64_t> dims)
    : Tensor(data_, dtype_, device_, std::vector<int64_t>(dims)) {}

Tensor::Tensor(void* data_, DType dtype_, Device device_, const std::vector<int64_t>& dims)
    : data(data_), dtype(dtype_), device(device_), ndim(static_cast<int>(dims.size())) {
  NW_CHECK(ndim <= kMaxDims, "tensors have at most ", kMaxDims, " dimensions, got ", ndim);
  for (int i = 0; i < ndim; ++i) {
    NW_CHECK(dims[i] >= 0, "negative dimension ", dims[i]);
    shape[i] = dims[i];
  }
  int64_t stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= shape[i];
  }
}

bool Tensor::contiguous() const {
  int64_t expected = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

std::string Tensor::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << "[";
  for (int i = 0; i < ndim; ++i) os << (i ? ", " : "") << shape[i];
  os << "] on " << device_name(device);
  return os.str();
}

Tensor Tensor::view(std::initializer_list<int64_t> dims) const {
  Tensor t(data, dtype, device, dims);
  NW_ASSERT(t.numel() == numel(), "view of ", describe(), " changes the element count");
  return t;
}

Tensor Tensor::first(std::initializer_list<int64_t> dims) const {
  Tensor t(data, dtype, device, dims);
  NW_ASSERT(t.numel() <= numel(), "first(): ", t.describe(), " does not fit in ", describe());
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  NW_ASSERT(ndim >= 1 && 0 <= begin && begin <= end && end <= shape[0], "bad row slice of ", describe());
  Tensor t = *this;
  t.shape[0] = end - begin;
  t.data = static_cast<char*>(data) + begin * (numel() / (shape[0] ? shape[0] : 1)) * dtype_size(dtype);
  return t;
}

void check_tensor(const Tensor& t, const char* op, const char* arg, DType dtype, Device device,
                  std::initializer_list<int64_t> shape) {
  NW_CHECK(t.defined(), op, ": ", arg, " is missing");
  NW_CHECK(t.dtype == dtype, op, ": ", arg, " must be ", dtype_name(dtype), ", got ", t.describe());
  NW_CHECK(t.device == device, op, ": ", arg, " must be on ", device_name(device), ", got ", t.describe());
  NW_CHECK(t.contiguous(), op, ": ", arg, " must be contiguous, got ", t.describe());
  bool ok = static_cast<int>(shape.size()) == t.ndim;
  int i = 0;
  for (int64_t s : shape) ok = ok && t.shape[i++] == s;
  if (!ok) {
    std::ostringstream want;
    want << "[";
    i = 0;
    for (int64_t s : shape) want << (i++ ? ", " : "") << s;
    want << "]";
    NW_CHECK(false, op, ": ", arg, " must have shape ", want.str(), ", got ", t.describe());
  }
}

void check_same(const Tensor& a, const Tensor& b, const char* op) {
  NW_CHECK(a.dtype == b.dtype && a.device == b.device, op, ": mixed tensors ", a.describe(), " and ",
           b.describe());
}

}  // namespace nw
