// Composed from the linear and cross-entropy ops, so it runs on whichever device the tensors are on.
#include "ops/head_loss.h"

#include <algorithm>

#include "core/profiler.h"
#include "ops/cross_entropy.h"
#include "ops/linear.h"

namespace nw {

int64_t head_loss_chunk_rows(int64_t N, int64_t V, DType dtype, int64_t max_bytes) {
  NW_CHECK(N >= 0 && V >= 1 && max_bytes >= 1,
           "head_loss_chunk_rows: needs N >= 0, V >= 1 and a positive budget, got N=", N, ", V=", V,
           ", max_bytes=", max_bytes);
  const int64_t fit = max_bytes / (V * int64_t(dtype_size(dtype)));
  return std::max<int64_t>(1, std::min(N, fit));
}

void head_cross_entropy(const Tensor& losses, const Tensor& dx, const Tensor& dw, const Tensor& scratch,
                        const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& weights, float cap,
                        const Tensor& grad_per_token, Precision precision) {
  const profiler::Scope scope("head_cross_entropy", x.device);
  const char* op = "head_cross_entropy";
  NW_CHECK(x.ndim == 2 && w.ndim == 2, op, ": x must be (N, C) and w (V, C), got ", x.describe(), " and ",
           w.describe());
  const int64_t N = x.size(0), C = x.size(1), V = w.size(0);
  check_tensor(w, op, "w", x.dtype, x.device, {V, C});
  NW_CHECK(scratch.ndim == 2 && scratch.size(0) >= 1, op, ": scratch must be (R, V) with R >= 1, got ",
           scratch.describe());
  check_tensor(scratch, op, "scratch", x.dtype, x.device, {scratch.size(0), V});
  check_tensor(losses, op, "losses", x.dtype, x.device, {N});
  check_tensor(targets, op, "targets", DType::I32, x.device, {N});
  if (weights.defined()) check_tensor(weights, op, "weights", x.dtype, x.device, {N});
  NW_CHECK(dx.defined() == dw.defined(), op, ": dx and dw are given together (training) or not at all");
  if (dx.defined()) {
    check_tensor(dx, op, "dx", x.dtype, x.device, {N, C});
    check_tensor(dw, op, "dw", x.dtype, x.device, {V, C});
    check_tensor(grad_per_token, op, "grad_per_token", x.dtype, x.device, {1});
  }
  const int64_t R = scratch.size(0);
  for (int64_t r0 = 0; r0 < N; r0 += R) {
    const int64_t r1 = std::min(N, r0 + R);
    const Tensor logits = scratch.slice_rows(0, r1 - r0);  // (r1 - r0, V)
    const Tensor xs = x.slice_rows(r0, r1), ls = losses.slice_rows(r0, r1), ts = targets.slice_rows(r0, r1);
    const Tensor ws = weights.defined() ? weights.slice_rows(r0, r1) : Tensor();
    linear_forward(logits, xs, w, precision);
    if (!dx.defined()) {
      softcap_cross_entropy(ls, Tensor(), logits, ts, ws, cap, Tensor());
      continue;
    }
    softcap_cross_entropy(ls, logits, logits, ts, ws, cap, grad_per_token);  // logits -> dlogits in place
    linear_backward(dx.slice_rows(r0, r1), dw, logits, xs, w, precision);
  }
}

}  // namespace nw
