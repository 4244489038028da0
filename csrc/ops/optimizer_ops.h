// Elementwise optimizer math over flat tensors: AdamW, the Muon update of one or more matrices,
// and the deterministic squared norm used for clipping.
#pragma once
#include "core/precision.h"
#include "core/tensor.h"

namespace nw {
// The step's scalars, staged by the host before the step's device work (Optimizer::step's host phase)
// so that the work itself, replayed from a CUDA graph, reads this step's values rather than baked-in ones.
struct StepScalars {
  float lr_mult, wd_mult;  // multiply the base learning rates and weight decays
  float muon_momentum;     // Muon's momentum this step
  float balance_gamma;     // the balance biases' step size
};

// One optimizer step's control block, in the memory of the tensors it steers (device memory on CUDA, so
// that a step needs no host value between its launch and the one read of the norm at its end). An update
// given a control reads the step there: it is skipped unless apply, its lr is a.lr * lr_mult, its weight
// decay a.weight_decay * wd_mult, Muon's momentum muon_momentum (a.momentum unused) and AdamW's step
// `steps` (a.step unused).
struct StepControl {
  StepScalars scalars;  // written by the host
  int64_t steps;        // steps applied so far, this one included once clip_control decided it applies
  double sum_squares;   // of every gradient element
  double norm;          // sqrt(sum_squares)
  float clip_scale;     // grad_clip / norm when 0 < grad_clip < norm, else 1
  int32_t apply;        // 0 when the norm is not finite: every update reading it is then a no-op
};

struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;                          // 1-based, for bias correction
  const StepControl* control = nullptr;  // the step's control block (see StepControl), or none
};
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a);

struct MuonArgs {
  float lr, momentum, weight_decay;
  int ns_steps;
  bool nesterov;
  // Operands of the Newton–Schulz matmuls. bf16 rounds them (fp32 accumulation); the momentum buffer,
  // the iterate between matmuls, the update and the weights stay float32 in both precisions.
  Precision precision = Precision::FP32;
  const StepControl* control = nullptr;  // the step's control block (see StepControl), or none
};
// param, grad, momentum: (M, R, C), M independent matrices (experts) each orthogonalised on its own.
// Update: buf = mu*buf + g; u = nesterov ? g + mu*buf : buf; W = W*(1 - lr*wd) - lr*scale*NS(u),
// scale = sqrt(max(1, R/C)). The workspace holds muon_workspace_slots(M, device) slots of
// muon_workspace_numel(R, C, precision) elements.
void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace,
                 const MuonArgs& a);
// Elements of scratch space newton_schulz needs for one (R, C) matrix, and muon_update per slot.
int64_t newton_schulz_workspace_numel(int64_t R, int64_t C, Precision p = Precision::FP32);
int64_t muon_workspace_numel(int64_t R, int64_t C, Precision p = Precision::FP32);
// Slots muon_update needs at least for M matrices: CUDA orthogonalises all M in one batch (M slots);
// the CPU works through them with one slot per thread and needs one (more slots, more threads at once).
int64_t muon_workspace_slots(int64_t M, Device d);
// Newton–Schulz orthogonalisation of one (R, C) matrix in place (quintic, 3.4445/-4.7750/2.0315), its
// matmul operands in precision p.
void newton_schulz(const Tensor& x /*(R, C)*/, const Tensor& workspace, int steps, Precision p = Precision::FP32);

// sum(x^2) in float64, summed in fixed-size chunks in a fixed order (same bits for any thread count).
double sum_squares(const Tensor& x);
void scale_inplace(const Tensor& x, float s);

// The clipping decision in the control block: writes sum_squares (the bits of sum_squares(grads)), norm,
// clip_scale and apply, and counts the step in steps when it applies; on CUDA without synchronising with
// the host, partial then being scratch of clip_partials(grads.numel()) doubles on the device (unused on
// the CPU, where the control block is host memory).
void clip_control(StepControl* control, double* partial, const Tensor& grads, float grad_clip);
int64_t clip_partials(int64_t n);
// x *= control->clip_scale, a no-op when the scale is 1.
void scale_by_control(const Tensor& x, const StepControl* control);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a);
template <typename T>
void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace,
                 const MuonArgs& a);
template <typename T>
void newton_schulz(const Tensor& x, const Tensor& workspace, int steps, Precision p);
template <typename T>
double sum_squares(const Tensor& x);
template <typename T>
void scale_inplace(const Tensor& x, float s);
}  // namespace cpu
namespace cuda {
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a);
void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace,
                 const MuonArgs& a);
void newton_schulz(const Tensor& x, const Tensor& workspace, int steps, Precision p);
double sum_squares(const Tensor& x);
void scale_inplace(const Tensor& x, float s);
void clip_control(StepControl* control, double* partial, const Tensor& grads, float grad_clip);
int64_t clip_partials(int64_t n);
void scale_by_control(const Tensor& x, const StepControl* control);
}  // namespace cuda
}  // namespace nw
