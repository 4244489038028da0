#include "ops/activation.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

Activation parse_activation(const std::string& name) {
  if (name == "relu2") return Activation::ReLU2;
  if (name == "swiglu") return Activation::SwiGLU;
  NW_CHECK(false, "activation must be 'relu2' or 'swiglu', got '", name, "'");
  return Activation::ReLU2;
}

static void check_activation(Activation a, const Tensor& h, const Tensor& pre, const char* op) {
  NW_CHECK(h.ndim == 2, op, ": h must be (N, H), got ", h.describe());
  check_tensor(pre, op, "pre-activation", h.dtype, h.device, {h.size(0), activation_in_width(a, h.size(1))});
}

void activation_forward(Activation a, const Tensor& h, const Tensor& pre) {
  const profiler::Scope scope("activation_forward", h.device);
  check_activation(a, h, pre, "activation_forward");
  if (h.device == Device::CUDA) return cuda::activation_forward(a, h, pre);
  NW_DISPATCH_CPU(h.dtype, T, cpu::activation_forward<T>(a, h, pre));
}

void activation_backward(Activation a, const Tensor& dpre, const Tensor& dh, const Tensor& pre) {
  const profiler::Scope scope("activation_backward", dpre.device);
  check_activation(a, dh, pre, "activation_backward");
  check_tensor(dpre, "activation_backward", "dpre", pre.dtype, pre.device, {pre.size(0), pre.size(1)});
  if (dh.device == Device::CUDA) return cuda::activation_backward(a, dpre, dh, pre);
  NW_DISPATCH_CPU(dh.dtype, T, cpu::activation_backward<T>(a, dpre, dh, pre));
}

}  // namespace nw
