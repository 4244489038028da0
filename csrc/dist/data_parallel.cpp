#include "dist/data_parallel.h"

#include <algorithm>

#include "core/error.h"

namespace nw::dist {

void all_reduce_gradients(Communicator& comm, Model& model, int64_t bucket_bytes) {
  NW_CHECK(bucket_bytes > 0, "bucket_bytes must be > 0, got ", bucket_bytes);
  const Tensor grads = model.grads().flat();  // (total,) incl. padding, which is zero on every rank
  const int64_t bucket = std::max<int64_t>(1, bucket_bytes / int64_t(dtype_size(grads.dtype)));
  for (int64_t begin = 0; begin < grads.numel(); begin += bucket)
    comm.all_reduce(grads.slice_rows(begin, std::min(grads.numel(), begin + bucket)), ReduceOp::Sum, "gradient all-reduce");
  const Tensor& counts = model.pending_counts();  // (n_moe_layers, E) int64
  if (counts.numel() > 0) comm.all_reduce(counts, ReduceOp::Sum, "routing-count all-reduce");
}

}  // namespace nw::dist
