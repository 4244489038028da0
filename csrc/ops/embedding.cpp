#include "ops/embedding.h"

#include "core/profiler.h"
#include "ops/dispatch.h"

namespace nw {

static void check_embedding(const Tensor& rows, const Tensor& table, const Tensor& tokens, const char* op) {
  NW_CHECK(table.ndim == 2, op, ": table must be (V, C), got ", table.describe());
  check_tensor(tokens, op, "tokens", DType::I32, table.device, {rows.size(0)});
  check_tensor(rows, op, "rows", table.dtype, table.device, {tokens.size(0), table.size(1)});
}

void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) {
  const profiler::Scope scope("embedding_forward", out.device);
  check_embedding(out, table, tokens, "embedding_forward");
  if (table.device == Device::CUDA) return cuda::embedding_forward(out, table, tokens);
  NW_DISPATCH_CPU(table.dtype, T, cpu::embedding_forward<T>(out, table, tokens));
}

void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& tokens) {
  const profiler::Scope scope("embedding_backward", dtable.device);
  check_embedding(dout, dtable, tokens, "embedding_backward");
  if (dtable.device == Device::CUDA) return cuda::embedding_backward(dtable, dout, tokens);
  NW_DISPATCH_CPU(dtable.dtype, T, cpu::embedding_backward<T>(dtable, dout, tokens));
}

}  // namespace nw
