// Muon for hidden matrices (each expert's matrix on its own) and AdamW for embeddings, head, router
// and norm gains (DESIGN.md §4). State lives in arenas with the model's parameter layout.
// Muon's Newton–Schulz matmuls run in the model's precision (core/precision.h) at each step.
#pragma once
#include <cstdint>

#include "core/arena.h"
#include "model/model.h"
#include "ops/optimizer_ops.h"

namespace nw {

struct AdamGroup {
  float lr, beta1 = 0.8f, beta2 = 0.95f, eps = 1e-10f, weight_decay = 0.0f;
};

struct OptimizerConfig {
  float muon_lr = 0.02f;
  float muon_momentum = 0.95f;
  float muon_weight_decay = 0.0f;
  int ns_steps = 5;
  bool nesterov = true;
  AdamGroup embed{0.05f};
  AdamGroup head{0.004f};
  AdamGroup router{0.004f};
  AdamGroup scalar{0.02f};
  float grad_clip = 1.0f;  // global-norm clipping; 0 disables
  void validate() const;
};

// Per-step multipliers set by the training loop's schedules.
struct StepArgs {
  float lr_mult = 1.0f;
  float wd_mult = 1.0f;
  float muon_momentum = -1.0f;  // < 0: use the config's momentum
  float balance_gamma = -1.0f;  // < 0: use the model config's balance_gamma
};

class Optimizer {
 public:
  Optimizer(Model& model, const OptimizerConfig& cfg);
  // Clips, updates every parameter, updates the balance biases; returns the pre-clip gradient norm.
  // A non-finite norm skips the update and leaves parameters untouched. On CUDA the norm, the clipping
  // and the skip are decided on the device; the returned norm is the step's one read from the device.
  double step(const StepArgs& args);
  int64_t steps() const { return step_; }
  const OptimizerConfig& config() const { return cfg_; }
  const Arena& exp_avg() const { return m_; }     // Adam m / Muon momentum
  const Arena& exp_avg_sq() const { return v_; }  // Adam v (unused for Muon parameters)
  void set_steps(int64_t s) { step_ = s; }

 private:
  // Launches every parameter's update for step step_ + 1; with a control block (CUDA) each update is a
  // no-op on the device when the step does not apply.
  void update_parameters(const StepArgs& args, const StepControl* control);

  Model& model_;
  OptimizerConfig cfg_;
  Arena m_, v_;
  Buffer workspace_;
  Buffer control_;  // CUDA: StepControl, then the norm's partial sums (ops/optimizer_ops.h)
  int64_t step_ = 0;
};

}  // namespace nw
