#include "ops/moe_dispatch.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

void moe_dispatch(const Tensor& counts, const Tensor& offsets, const Tensor& row_of_slot, const Tensor& token_of_row,
                  const Tensor& topk) {
  const profiler::Scope scope("moe_dispatch", counts.device);
  const char* op = "moe_dispatch";
  NW_CHECK(topk.ndim == 2, op, ": topk must be (N, K), got ", topk.describe());
  const Device dev = topk.device;
  const int64_t NK = topk.numel(), E = counts.size(0);
  check_tensor(topk, op, "topk", DType::I32, dev, {topk.size(0), topk.size(1)});
  check_tensor(counts, op, "counts", DType::I32, dev, {E});
  check_tensor(offsets, op, "offsets", DType::I32, dev, {E + 1});
  check_tensor(row_of_slot, op, "row_of_slot", DType::I32, dev, {NK});
  check_tensor(token_of_row, op, "token_of_row", DType::I32, dev, {NK});
  if (dev == Device::CUDA) return cuda::moe_dispatch(counts, offsets, row_of_slot, token_of_row, topk);
  const int32_t* ip = topk.ptr<int32_t>();
  for (int64_t p = 0; p < NK; ++p) NW_CHECK(ip[p] >= 0 && ip[p] < E, op, ": expert id ", ip[p], " is outside [0, ", E, ")");
  cpu::moe_dispatch(counts, offsets, row_of_slot, token_of_row, topk);
}

void moe_gather(const Tensor& xe, const Tensor& x, const Tensor& token_of_row) {
  const profiler::Scope scope("moe_gather", xe.device);
  NW_CHECK(x.ndim == 2, "moe_gather: x must be (N, C), got ", x.describe());
  check_tensor(token_of_row, "moe_gather", "token_of_row", DType::I32, x.device, {xe.size(0)});
  check_tensor(xe, "moe_gather", "xe", x.dtype, x.device, {token_of_row.size(0), x.size(1)});
  if (x.device == Device::CUDA) return cuda::moe_gather(xe, x, token_of_row);
  NW_DISPATCH_CPU(x.dtype, T, cpu::moe_gather<T>(xe, x, token_of_row));
}

void moe_gather_backward(const Tensor& dx, const Tensor& dxe, const Tensor& row_of_slot) {
  const profiler::Scope scope("moe_gather_backward", dx.device);
  NW_CHECK(dx.ndim == 2 && dx.size(0) > 0 && row_of_slot.size(0) % dx.size(0) == 0,
           "moe_gather_backward: dx (N, C) and row_of_slot (N*K) expected, got ", dx.describe(), " and ",
           row_of_slot.describe());
  check_tensor(dxe, "moe_gather_backward", "dxe", dx.dtype, dx.device, {row_of_slot.size(0), dx.size(1)});
  if (dx.device == Device::CUDA) return cuda::moe_gather_backward(dx, dxe, row_of_slot);
  NW_DISPATCH_CPU(dx.dtype, T, cpu::moe_gather_backward<T>(dx, dxe, row_of_slot));
}

static void check_combine(const Tensor& y, const Tensor& ye, const Tensor& gates, const Tensor& row_of_slot,
                          const char* op) {
  NW_CHECK(y.ndim == 2 && gates.ndim == 2, op, ": y (N, C) and gates (N, K) expected, got ", y.describe(), " and ",
           gates.describe());
  const int64_t N = y.size(0), C = y.size(1), K = gates.size(1);
  check_tensor(gates, op, "gates", y.dtype, y.device, {N, K});
  check_tensor(ye, op, "ye", y.dtype, y.device, {N * K, C});
  check_tensor(row_of_slot, op, "row_of_slot", DType::I32, y.device, {N * K});
}

void moe_combine(const Tensor& y, const Tensor& ye, const Tensor& gates, const Tensor& row_of_slot) {
  const profiler::Scope scope("moe_combine", y.device);
  check_combine(y, ye, gates, row_of_slot, "moe_combine");
  if (y.device == Device::CUDA) return cuda::moe_combine(y, ye, gates, row_of_slot);
  NW_DISPATCH_CPU(y.dtype, T, cpu::moe_combine<T>(y, ye, gates, row_of_slot));
}

void moe_combine_backward(const Tensor& dye, const Tensor& dgates, const Tensor& dy, const Tensor& ye,
                          const Tensor& gates, const Tensor& row_of_slot) {
  const profiler::Scope scope("moe_combine_backward", dye.device);
  check_combine(dy, ye, gates, row_of_slot, "moe_combine_backward");
  check_tensor(dye, "moe_combine_backward", "dye", ye.dtype, ye.device, {ye.size(0), ye.size(1)});
  check_tensor(dgates, "moe_combine_backward", "dgates", ye.dtype, ye.device, {gates.size(0), gates.size(1)});
  if (dy.device == Device::CUDA) return cuda::moe_combine_backward(dye, dgates, dy, ye, gates, row_of_slot);
  NW_DISPATCH_CPU(dy.dtype, T, cpu::moe_combine_backward<T>(dye, dgates, dy, ye, gates, row_of_slot));
}

}  // namespace nw
