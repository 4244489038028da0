#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/cuda_device.h"
#include "core/threading.h"
#include "ops/optimizer_ops.h"

namespace nw {

void OptimizerConfig::validate() const {
  NW_CHECK(muon_lr >= 0, "OptimizerConfig.muon_lr must be >= 0, got ", muon_lr);
  NW_CHECK(muon_momentum >= 0 && muon_momentum < 1, "OptimizerConfig.muon_momentum must be in [0, 1), got ", muon_momentum);
  NW_CHECK(muon_weight_decay >= 0, "OptimizerConfig.muon_weight_decay must be >= 0, got ", muon_weight_decay);
  NW_CHECK(ns_steps >= 1 && ns_steps <= 20, "OptimizerConfig.ns_steps must be in [1, 20], got ", ns_steps);
  NW_CHECK(grad_clip >= 0, "OptimizerConfig.grad_clip must be >= 0 (0 = off), got ", grad_clip);
  const std::pair<const AdamGroup*, const char*> groups[] = {
      {&embed, "embed"}, {&head, "head"}, {&router, "router"}, {&scalar, "scalar"}};
  for (auto [g, name] : groups) {
    NW_CHECK(g->lr >= 0, "OptimizerConfig.", name, ".lr must be >= 0, got ", g->lr);
    NW_CHECK(g->beta1 >= 0 && g->beta1 < 1, "OptimizerConfig.", name, ".beta1 must be in [0, 1), got ", g->beta1);
    NW_CHECK(g->beta2 >= 0 && g->beta2 < 1, "OptimizerConfig.", name, ".beta2 must be in [0, 1), got ", g->beta2);
    NW_CHECK(g->eps > 0, "OptimizerConfig.", name, ".eps must be > 0, got ", g->eps);
    NW_CHECK(g->weight_decay >= 0, "OptimizerConfig.", name, ".weight_decay must be >= 0, got ", g->weight_decay);
  }
}

Optimizer::Optimizer(Model& model, const OptimizerConfig& cfg) : model_(model), cfg_(cfg) {
  cfg_.validate();
  const Arena& p = model.params();
  const auto layout = std::make_shared<Layout>(p.layout());
  m_ = Arena(layout, p.dtype(), p.device());
  v_ = Arena(layout, p.dtype(), p.device());
  // Muon's scratch, allocated once for the largest parameter: sized for bf16 (the larger) since the
  // model's precision may change between steps. CUDA orthogonalises a parameter's M matrices in one
  // batch (M slots); on the CPU one slot per thread lets Muon orthogonalise several experts at once.
  int64_t ws = 0;
  for (int i = 0; i < layout->size(); ++i) {
    if (model.kind(i) != ParamKind::Matrix) continue;
    const auto& s = (*layout)[i].shape;
    const int64_t M = s.size() == 3 ? s[0] : 1;
    const int64_t slots = std::max<int64_t>(muon_workspace_slots(M, p.device()),
                                            p.device() == Device::CPU ? get_num_threads() : 1);
    ws = std::max(ws, slots * muon_workspace_numel(s[s.size() - 2], s.back(), Precision::BF16));
  }
  workspace_ = Buffer(ws * dtype_size(p.dtype()), p.device());
  // The step's control block on the parameters' device (zeroed: no step applied yet); on CUDA followed
  // by the norm's partial sums, and staged from pinned host memory.
  const bool cuda = p.device() == Device::CUDA;
  control_ = Buffer(sizeof(StepControl) + (cuda ? clip_partials(p.flat().numel()) * sizeof(double) : 0), p.device());
  control_.zero();
  if (cuda) staging_.reset(static_cast<StepScalars*>(cuda::pinned_alloc(sizeof(StepScalars))));
}

void Optimizer::PinnedFree::operator()(StepScalars* p) const { cuda::pinned_free(p); }

double Optimizer::step(const StepArgs& args) {
  stage(args);
  if (graph_.enabled() != model_.cuda_graphs()) graph_.set_enabled(model_.cuda_graphs());
  // The update's launches depend on the matmul precision (Muon's Newton–Schulz operands) and on nothing
  // else that can change: the arenas, the control block and the workspace stay where they are.
  graph_.run(model_.device(), {uint64_t(model_.precision())}, [this] { device_phase(); });
  return finish();
}

void Optimizer::stage(const StepArgs& args) {
  NW_CHECK(args.lr_mult >= 0 && std::isfinite(args.lr_mult), "lr_mult must be finite and >= 0, got ", args.lr_mult);
  NW_CHECK(args.wd_mult >= 0 && std::isfinite(args.wd_mult), "wd_mult must be finite and >= 0, got ", args.wd_mult);
  NW_CHECK(args.muon_momentum < 1, "muon_momentum must be < 1, got ", args.muon_momentum);
  const StepScalars s{args.lr_mult, args.wd_mult,
                      args.muon_momentum >= 0 ? args.muon_momentum : cfg_.muon_momentum,
                      args.balance_gamma >= 0 ? args.balance_gamma : model_.config().balance_gamma};
  NW_CHECK(s.balance_gamma >= 0 && std::isfinite(s.balance_gamma), "balance gamma must be finite and >= 0, got ",
           s.balance_gamma);
  if (!staging_) {
    control()->scalars = s;  // the CPU's control block is host memory
    return;
  }
  *staging_ = s;
  cuda::copy_host_to_device_async(&control()->scalars, staging_.get(), sizeof(StepScalars));
}

void Optimizer::device_phase() {
  const Tensor grads = model_.grads().flat();  // the ops' scratch: the step workspace graph_.run opens
  // A non-finite norm makes every update below a no-op, which leaves parameters, states and biases as
  // they were and the step uncounted.
  clip_control(control(), reinterpret_cast<double*>(control() + 1), grads, cfg_.grad_clip);
  scale_by_control(grads, control());
  update_parameters(control());
  model_.update_balance_bias(*control());
}

double Optimizer::finish() {
  static_assert(sizeof(StepControl) % sizeof(int64_t) == 0);
  StepControl c;
  copy_to_host(&c, Tensor(control(), DType::I64, control_.device(), {int64_t(sizeof(StepControl) / sizeof(int64_t))}));
  step_ = c.steps;
  return c.norm;
}

void Optimizer::set_steps(int64_t s) {
  NW_CHECK(s >= 0, "optimizer steps must be >= 0, got ", s);
  copy_from_host(Tensor(&control()->steps, DType::I64, control_.device(), {1}), &s);
  step_ = s;
}

void Optimizer::update_parameters(const StepControl* control) {
  const Arena& params = model_.params();
  const Arena& grads = model_.grads();
  const Layout& layout = params.layout();
  const Tensor ws(workspace_.data(), params.dtype(), params.device(),
                  {int64_t(workspace_.nbytes() / dtype_size(params.dtype()))});
  // The base rates; the control block's multipliers, Muon's momentum and the step count are read where
  // the updates run (ops/optimizer_ops.h: StepControl).
  for (int i = 0; i < layout.size(); ++i) {
    const ParamKind kind = model_.kind(i);
    if (kind == ParamKind::Matrix) {
      MuonArgs a{cfg_.muon_lr, cfg_.muon_momentum, cfg_.muon_weight_decay, cfg_.ns_steps, cfg_.nesterov,
                 model_.precision(), control};
      const auto& s = layout[i].shape;
      const int64_t M = s.size() == 3 ? s[0] : 1, R = s[s.size() - 2], C = s.back();
      auto as3 = [&](const Tensor& t) { return Tensor(t.data, t.dtype, t.device, {M, R, C}); };
      muon_update(as3(params.view(i)), as3(grads.view(i)), as3(m_.view(i)), ws, a);
      continue;
    }
    const AdamGroup& g = kind == ParamKind::Embedding ? cfg_.embed
                         : kind == ParamKind::Head    ? cfg_.head
                         : kind == ParamKind::Router  ? cfg_.router
                                                      : cfg_.scalar;
    adamw_update(params.view(i), grads.view(i), m_.view(i), v_.view(i),
                 AdamWArgs{g.lr, g.beta1, g.beta2, g.eps, g.weight_decay, 0, control});
  }
}

}  // namespace nw
