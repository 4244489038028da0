// Device scratch that a training step reuses instead of allocating. The CUDA ops take their temporary
// buffers (kernels/common.cuh Scratch: bf16 operand copies, partial sums, sort space) from the
// stream-ordered pool; while a StepWorkspace is open on this thread they take them from one device block,
// stacked in call order. The first step at a shape measures its peak and sizes the block at the end, so
// the steps after it at that shape allocate nothing. Stream order keeps the reuse safe: every op runs on
// the one compute stream, so a buffer is handed out again only to work issued after its last reader.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace nw {

class StepWorkspace {
 public:
  // Opens the device's workspace on this thread (CUDA; on the CPU it does nothing). Nested or concurrent
  // opens leave the one already open in charge: the inner or other-thread scope uses the pool.
  explicit StepWorkspace(Device device);
  ~StepWorkspace();
  StepWorkspace(const StepWorkspace&) = delete;
  StepWorkspace& operator=(const StepWorkspace&) = delete;

 private:
  bool opened_ = false;
};

namespace cuda {
bool open_step_workspace();   // true when this call opened it
void close_step_workspace();  // grows the block to the step's peak when it outgrew it
// Scratch buffers served by the stream-ordered pool since the process started (tests count them).
int64_t scratch_pool_allocations();
// Counts the times a device's block moved (was sized again): a CUDA graph that holds addresses in the
// block is stale once this changes.
int64_t step_workspace_generation();
}  // namespace cuda

}  // namespace nw
