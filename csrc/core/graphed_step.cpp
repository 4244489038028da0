#include "core/graphed_step.h"

#include "core/profiler.h"
#include "core/step_workspace.h"

namespace nw {

void GraphedStep::set_enabled(bool on) {
  enabled_ = on;
  if (!on) {
    graph_.reset();
    eager_seen_ = false;
  }
}

void GraphedStep::run_eager(Device device, const Key& key, const std::function<void()>& work) {
  {
    const StepWorkspace workspace(device);
    work();
  }
  eager_seen_ = true;
  eager_key_ = key;
  eager_generation_ = device == Device::CUDA ? cuda::step_workspace_generation() : 0;
}

void GraphedStep::run(Device device, const Key& key, const std::function<void()>& work) {
  // The profiler times each op after a device synchronisation, which a graph cannot hold.
  if (!enabled_ || !failure_.empty() || device != Device::CUDA || profiler::enabled())
    return run_eager(device, key, work);
  const int64_t generation = cuda::step_workspace_generation();
  if (!graph_.empty() && graph_key_ == key && graph_generation_ == generation) {
    graph_.replay();
    ++replays_;
    return;
  }
  if (!(eager_seen_ && eager_key_ == key && eager_generation_ == generation)) return run_eager(device, key, work);
  try {
    const StepWorkspace workspace(device);
    graph_.capture(work);  // records the launches; nothing runs yet
  } catch (const Error& e) {
    failure_ = e.what();
    graph_.reset();
    return run_eager(device, key, work);
  }
  if (cuda::step_workspace_generation() != generation) {  // the capture outgrew the block, which moved
    graph_.reset();
    return run_eager(device, key, work);
  }
  graph_key_ = key;
  graph_generation_ = generation;
  ++captures_;
  graph_.replay();
  ++replays_;
}

}  // namespace nw
