#include "ops/cross_entropy.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

void softcap_cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                           const Tensor& weights, float cap, const Tensor& grad_per_token) {
  const profiler::Scope scope("softcap_cross_entropy", losses.device);
  const char* op = "softcap_cross_entropy";
  NW_CHECK(logits.ndim == 2, op, ": logits must be (N, V), got ", logits.describe());
  const int64_t N = logits.size(0), V = logits.size(1);
  check_tensor(targets, op, "targets", DType::I32, logits.device, {N});
  check_tensor(losses, op, "losses", logits.dtype, logits.device, {N});
  if (dlogits.defined()) check_tensor(dlogits, op, "dlogits", logits.dtype, logits.device, {N, V});
  if (weights.defined()) check_tensor(weights, op, "weights", logits.dtype, logits.device, {N});
  if (dlogits.defined()) check_tensor(grad_per_token, op, "grad_per_token", logits.dtype, logits.device, {1});
  if (logits.device == Device::CUDA)
    return cuda::softcap_cross_entropy(losses, dlogits, logits, targets, weights, cap, grad_per_token);
  const int32_t* t = targets.ptr<int32_t>();
  for (int64_t n = 0; n < N; ++n)
    NW_CHECK(t[n] >= -1 && t[n] < V, op, ": target ", t[n], " at position ", n, " is outside [-1, ", V, ")");
  NW_DISPATCH_CPU(logits.dtype, T, cpu::softcap_cross_entropy<T>(losses, dlogits, logits, targets, weights, cap, grad_per_token));
}

void softcap(const Tensor& logits, float cap) {
  const profiler::Scope scope("softcap", logits.device);
  if (logits.device == Device::CUDA) return cuda::softcap(logits, cap);
  NW_DISPATCH_CPU(logits.dtype, T, cpu::softcap<T>(logits, cap));
}

}  // namespace nw
