// Data parallelism: after each rank has run its micro-batches, the ranks sum their gradients and MoE
// routing counts, so every rank takes the same optimizer step and the same balance-bias update.
#pragma once
#include <cstdint>

#include "dist/communicator.h"
#include "model/model.h"

namespace nw::dist {

// Sums the whole gradient arena over the ranks in place, one all-reduce per bucket of at most
// bucket_bytes, always in arena order (so every run reduces the same buffers in the same calls), then
// the routing counts pending for the next balance-bias update. The ranks scale their gradients by
// 1 / (micro-batches x ranks) beforehand, so the sum is the global batch's mean gradient.
void all_reduce_gradients(Communicator& comm, Model& model, int64_t bucket_bytes);

}  // namespace nw::dist
