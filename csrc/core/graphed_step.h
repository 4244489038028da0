// Runs one kind of training work — a micro-batch's forward and backward, an optimizer update — as a CUDA
// graph once its buffers have settled, with the step workspace (core/step_workspace.h) open around it.
//   1st run at a key: eager; it sizes the step workspace's block for this work.
//   2nd run at the key, nothing moved since: captured into a graph, then launched.
//   later runs at the key: the graph is launched; the host issues one call instead of thousands.
// The key names everything the work's launches depend on (shapes, precision, the owner's buffer
// addresses); the step workspace's generation is checked here. The work must read every per-call value
// from device memory staged before run(), never from kernel arguments, or replays would repeat the values
// of the captured call. A failed capture (work that synchronises with the host, say) turns graphs off for
// this step with the reason in failure(), and the work runs eagerly: training goes on, and the tests that
// count replays catch it.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/cuda_graph.h"
#include "core/tensor.h"

namespace nw {

class GraphedStep {
 public:
  using Key = std::vector<uint64_t>;
  void run(Device device, const Key& key, const std::function<void()>& work);

  void set_enabled(bool on);  // off: every run is eager; the graph is dropped
  bool enabled() const { return enabled_; }
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }  // graph launches, the one right after a capture included
  const std::string& failure() const { return failure_; }

 private:
  void run_eager(Device device, const Key& key, const std::function<void()>& work);

  bool enabled_ = false;
  cuda::Graph graph_;
  Key graph_key_;
  int64_t graph_generation_ = -1;
  bool eager_seen_ = false;  // an eager run at eager_key_ left the workspace at eager_generation_
  Key eager_key_;
  int64_t eager_generation_ = -1;
  int64_t captures_ = 0, replays_ = 0;
  std::string failure_;
};

}  // namespace nw
