#include "ops/accumulate_losses.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

void accumulate_losses(const Tensor& acc, const Tensor& losses, const Tensor& weights, const Tensor& divisor,
                       const Tensor& balance) {
  const profiler::Scope scope("accumulate_losses", losses.device);
  const char* op = "accumulate_losses";
  NW_CHECK(losses.ndim == 1, op, ": losses must be (N), got ", losses.describe());
  const Device dev = losses.device;
  check_tensor(acc, op, "acc", DType::F64, dev, {2});
  check_tensor(divisor, op, "divisor", DType::F64, dev, {1});
  if (weights.defined()) check_tensor(weights, op, "weights", losses.dtype, dev, {losses.size(0)});
  if (balance.defined()) check_tensor(balance, op, "balance", DType::F64, dev, {1});
  if (dev == Device::CUDA) return cuda::accumulate_losses(acc, losses, weights, divisor, balance);
  NW_DISPATCH_CPU(losses.dtype, T, cpu::accumulate_losses<T>(acc, losses, weights, divisor, balance));
}

}  // namespace nw
