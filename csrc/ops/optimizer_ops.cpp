#include "ops/optimizer_ops.h"

#include <algorithm>
#include <cmath>

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

int64_t newton_schulz_workspace_numel(int64_t R, int64_t C, Precision p) {
  // The iterate X and the product Y (R*C each), A = X X^T and B (m*m each); bf16 adds the rounded
  // operands of the three matmuls (X, A, B: float32 copies on the CPU, half that as bf16 on CUDA).
  // The slack of 64 lets the CUDA backend align each of its arrays to 32 bytes.
  const int64_t m = std::min(R, C), fp32 = 2 * R * C + 2 * m * m + 64;
  return p == Precision::BF16 ? fp32 + R * C + 2 * m * m : fp32;
}

int64_t muon_workspace_numel(int64_t R, int64_t C, Precision p) {
  return newton_schulz_workspace_numel(R, C, p) + R * C;
}

int64_t muon_workspace_slots(int64_t M, Device d) { return d == Device::CUDA ? M : 1; }

void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a) {
  const profiler::Scope scope("adamw_update", param.device);
  for (const Tensor* t : {&grad, &m, &v}) {
    check_same(param, *t, "adamw_update");
    NW_CHECK(t->numel() == param.numel(), "adamw_update: ", t->describe(), " does not match ", param.describe());
  }
  NW_CHECK(a.control || a.step >= 1, "adamw_update: step is 1-based, got ", a.step);
  if (param.device == Device::CUDA) return cuda::adamw_update(param, grad, m, v, a);
  NW_DISPATCH_CPU(param.dtype, T, cpu::adamw_update<T>(param, grad, m, v, a));
}

void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace,
                 const MuonArgs& a) {
  const profiler::Scope scope("muon_update", param.device);
  NW_CHECK(param.ndim == 3, "muon_update: param must be (M, R, C), got ", param.describe());
  for (const Tensor* t : {&grad, &momentum}) {
    check_same(param, *t, "muon_update");
    NW_CHECK(t->numel() == param.numel(), "muon_update: ", t->describe(), " does not match ", param.describe());
  }
  check_same(param, workspace, "muon_update");
  const int64_t need = muon_workspace_slots(param.size(0), param.device) *
                       muon_workspace_numel(param.size(1), param.size(2), a.precision);
  NW_CHECK(workspace.numel() >= need, "muon_update: workspace of ", workspace.numel(), " elements, ",
           precision_name(a.precision), " Muon of ", param.describe(), " needs ", need);
  if (param.device == Device::CUDA) return cuda::muon_update(param, grad, momentum, workspace, a);
  NW_DISPATCH_CPU(param.dtype, T, cpu::muon_update<T>(param, grad, momentum, workspace, a));
}

void newton_schulz(const Tensor& x, const Tensor& workspace, int steps, Precision p) {
  const profiler::Scope scope("newton_schulz", x.device);
  NW_CHECK(x.ndim == 2, "newton_schulz: x must be (R, C), got ", x.describe());
  check_same(x, workspace, "newton_schulz");
  NW_CHECK(workspace.numel() >= newton_schulz_workspace_numel(x.size(0), x.size(1), p),
           "newton_schulz: workspace too small");
  if (x.device == Device::CUDA) return cuda::newton_schulz(x, workspace, steps, p);
  NW_DISPATCH_CPU(x.dtype, T, cpu::newton_schulz<T>(x, workspace, steps, p));
}

double sum_squares(const Tensor& x) {
  const profiler::Scope scope("sum_squares", x.device);
  if (x.device == Device::CUDA) return cuda::sum_squares(x);
  double s = 0;
  NW_DISPATCH_CPU(x.dtype, T, s = cpu::sum_squares<T>(x));
  return s;
}

void scale_inplace(const Tensor& x, float s) {
  const profiler::Scope scope("scale_inplace", x.device);
  if (x.device == Device::CUDA) return cuda::scale_inplace(x, s);
  NW_DISPATCH_CPU(x.dtype, T, cpu::scale_inplace<T>(x, s));
}

void clip_control(StepControl* control, double* partial, const Tensor& grads, float grad_clip) {
  const profiler::Scope scope("clip_control", grads.device);
  NW_CHECK(grad_clip >= 0, "clip_control: grad_clip must be >= 0 (0 = off), got ", grad_clip);
  if (grads.device == Device::CUDA) return cuda::clip_control(control, partial, grads, grad_clip);
  double s = 0;
  NW_DISPATCH_CPU(grads.dtype, T, s = cpu::sum_squares<T>(grads));
  const double norm = std::sqrt(s);
  control->sum_squares = s;
  control->norm = norm;
  control->apply = std::isfinite(norm);
  const bool clip = control->apply && grad_clip > 0 && norm > double(grad_clip);
  control->clip_scale = clip ? float(double(grad_clip) / norm) : 1.f;
  control->steps += control->apply;
}

int64_t clip_partials(int64_t n) { return cuda::clip_partials(n); }

void scale_by_control(const Tensor& x, const StepControl* control) {
  const profiler::Scope scope("scale_by_control", x.device);
  if (x.device == Device::CUDA) return cuda::scale_by_control(x, control);
  if (control->clip_scale != 1.f) NW_DISPATCH_CPU(x.dtype, T, cpu::scale_inplace<T>(x, control->clip_scale));
}

}  // namespace nw
