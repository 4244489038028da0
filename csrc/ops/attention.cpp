#include "ops/attention.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

static void check_attention(const Tensor& y, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                            int window, const char* op) {
  NW_CHECK(q.ndim == 4 && k.ndim == 4, op, ": q and k must be (B, T, H, D), got ", q.describe(), " and ",
           k.describe());
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), KVH = k.size(2);
  NW_CHECK(KVH > 0 && H % KVH == 0, op, ": query heads (", H, ") must be a multiple of kv heads (", KVH, ")");
  NW_CHECK(window >= 0, op, ": window must be >= 0 (0 = full causal), got ", window);
  check_tensor(k, op, "k", q.dtype, q.device, {B, T, KVH, D});
  check_tensor(v, op, "v", q.dtype, q.device, {B, T, KVH, D});
  check_tensor(y, op, "y", q.dtype, q.device, {B, T, H, D});
  check_tensor(lse, op, "lse", q.dtype, q.device, {B, H, T});
}

void attention_forward(const Tensor& y, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                       int window, Precision precision) {
  const profiler::Scope scope("attention_forward", y.device);
  check_attention(y, lse, q, k, v, window, "attention_forward");
  check_precision(precision, q, "attention_forward");
  if (q.device == Device::CUDA) return cuda::attention_forward(y, lse, q, k, v, window, precision);
  NW_DISPATCH_CPU(q.dtype, T, cpu::attention_forward<T>(y, lse, q, k, v, window, precision));
}

void attention_forward_kv(const Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v, int64_t kv_len,
                          int window, Precision precision) {
  const profiler::Scope scope("attention_forward_kv", y.device);
  const char* op = "attention_forward_kv";
  NW_CHECK(q.ndim == 4 && k.ndim == 4, op, ": q (B, Tq, H, D) and k (B, Tcap, KVH, D) expected, got ", q.describe(),
           " and ", k.describe());
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), D = q.size(3), KVH = k.size(2);
  NW_CHECK(KVH > 0 && H % KVH == 0, op, ": query heads (", H, ") must be a multiple of kv heads (", KVH, ")");
  NW_CHECK(Tq <= kv_len && kv_len <= k.size(1), op, ": need Tq (", Tq, ") <= kv_len (", kv_len, ") <= cache rows (",
           k.size(1), ")");
  NW_CHECK(window >= 0, op, ": window must be >= 0 (0 = full causal), got ", window);
  check_tensor(k, op, "k", q.dtype, q.device, {B, k.size(1), KVH, D});
  check_tensor(v, op, "v", q.dtype, q.device, {B, k.size(1), KVH, D});
  check_tensor(y, op, "y", q.dtype, q.device, {B, Tq, H, D});
  check_precision(precision, q, op);
  if (q.device == Device::CUDA) return cuda::attention_forward_kv(y, q, k, v, kv_len, window, precision);
  NW_DISPATCH_CPU(q.dtype, T, cpu::attention_forward_kv<T>(y, q, k, v, kv_len, window, precision));
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dy, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& y, const Tensor& lse, int window,
                        Precision precision) {
  const profiler::Scope scope("attention_backward", dq.device);
  check_attention(y, lse, q, k, v, window, "attention_backward");
  check_precision(precision, q, "attention_backward");
  check_tensor(dy, "attention_backward", "dy", q.dtype, q.device, {q.size(0), q.size(1), q.size(2), q.size(3)});
  check_tensor(dq, "attention_backward", "dq", q.dtype, q.device, {q.size(0), q.size(1), q.size(2), q.size(3)});
  check_tensor(dk, "attention_backward", "dk", q.dtype, q.device, {k.size(0), k.size(1), k.size(2), k.size(3)});
  check_tensor(dv, "attention_backward", "dv", q.dtype, q.device, {k.size(0), k.size(1), k.size(2), k.size(3)});
  if (q.device == Device::CUDA) return cuda::attention_backward(dq, dk, dv, dy, q, k, v, y, lse, window, precision);
  NW_DISPATCH_CPU(q.dtype, T, cpu::attention_backward<T>(dq, dk, dv, dy, q, k, v, y, lse, window, precision));
}

}  // namespace nw
