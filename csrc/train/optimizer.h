// Muon for hidden matrices (each expert's matrix on its own) and AdamW for embeddings, head, router
// and norm gains (DESIGN.md §4). State lives in arenas with the model's parameter layout.
// Muon's Newton–Schulz matmuls run in the model's precision (core/precision.h) at each step.
#pragma once
#include <cstdint>
#include <memory>

#include "core/arena.h"
#include "core/graphed_step.h"
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
  // A non-finite norm skips the update and leaves parameters, states and biases untouched. The norm, the
  // clipping and the skip are decided in the step's control block (on CUDA on the device); the returned
  // norm is the step's one read from the device. step = stage, device_phase, finish; with the model's
  // cuda_graphs on, the device phase is replayed as a CUDA graph once it has been captured.
  double step(const StepArgs& args);

  int64_t steps() const { return step_; }
  void set_steps(int64_t s);  // for resuming: also the control block's count (AdamW's bias correction)
  const OptimizerConfig& config() const { return cfg_; }
  Model& model() const { return model_; }  // the model whose parameters it updates
  const Arena& exp_avg() const { return m_; }     // Adam m / Muon momentum
  const Arena& exp_avg_sq() const { return v_; }  // Adam v (unused for Muon parameters)
  const GraphedStep& graph() const { return graph_; }  // the device phase's CUDA graph: captures, replays

 private:
  // Host phase: checks the arguments and stages the step's scalars into the control block without
  // blocking the host (CUDA: a copy in stream order from pinned memory).
  void stage(const StepArgs& args);
  // Device phase: clipping, every parameter's update and the balance biases, all reading the staged
  // scalars and the applied-step count from the control block. It launches work and reads nothing back,
  // so one capture of it in a CUDA graph replays every later step at the same shapes.
  void device_phase();
  // The step's one read from the device: returns the norm, mirrors the applied-step count in steps().
  double finish();

  StepControl* control() const { return static_cast<StepControl*>(control_.data()); }
  // Launches every parameter's update, each a no-op when the control block says the step does not apply.
  void update_parameters(const StepControl* control);

  struct PinnedFree {
    void operator()(StepScalars* p) const;
  };

  Model& model_;
  OptimizerConfig cfg_;
  Arena m_, v_;
  Buffer workspace_;
  Buffer control_;  // StepControl on the model's device; on CUDA then the norm's partial sums
  // CUDA: the pinned source of stage()'s copy. One slot is enough: the next stage() rewrites it after
  // finish() has read the norm, which waits for the stream and so for this copy.
  std::unique_ptr<StepScalars, PinnedFree> staging_;
  GraphedStep graph_;
  int64_t step_ = 0;  // host mirror of the control block's applied-step count
};

}  // namespace nw
