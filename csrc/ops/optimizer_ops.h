// Elementwise optimizer math over flat tensors: AdamW, the Muon update of one or more matrices,
// and the deterministic squared norm used for clipping.
#pragma once
#include "core/tensor.h"

namespace nw {
struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1-based, for bias correction
};
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a);

struct MuonArgs {
  float lr, momentum, weight_decay;
  int ns_steps;
  bool nesterov;
};
// param, grad, momentum: (M, R, C), M independent matrices (experts) each orthogonalised on its own.
// Update: buf = mu*buf + g; u = nesterov ? g + mu*buf : buf; W = W*(1 - lr*wd) - lr*scale*NS(u),
// scale = sqrt(max(1, R/C)).
void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace,
                 const MuonArgs& a);
// Elements of scratch space newton_schulz and muon_update need for (R, C) matrices.
int64_t newton_schulz_workspace_numel(int64_t R, int64_t C);
int64_t muon_workspace_numel(int64_t R, int64_t C);
// Newton–Schulz orthogonalisation of one (R, C) matrix in place (quintic, 3.4445/-4.7750/2.0315).
void newton_schulz(const Tensor& x /*(R, C)*/, const Tensor& workspace, int steps);

// sum(x^2) in float64, summed in fixed-size chunks in a fixed order (same bits for any thread count).
double sum_squares(const Tensor& x);
void scale_inplace(const Tensor& x, float s);

// Backends: cpu/ holds the oracle (T = float or double), kernels/ the CUDA version.
namespace cpu {
template <typename T>
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a);
template <typename T>
void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace,
                 const MuonArgs& a);
template <typename T>
void newton_schulz(const Tensor& x, const Tensor& workspace, int steps);
template <typename T>
double sum_squares(const Tensor& x);
template <typename T>
void scale_inplace(const Tensor& x, float s);
}  // namespace cpu
namespace cuda {
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWArgs& a);
void muon_update(const Tensor& param, const Tensor& grad, const Tensor& momentum, const Tensor& workspace,
                 const MuonArgs& a);
void newton_schulz(const Tensor& x, const Tensor& workspace, int steps);
double sum_squares(const Tensor& x);
void scale_inplace(const Tensor& x, float s);
}  // namespace cuda
}  // namespace nw
