#include "model/kv_cache.h"

namespace nw {

KVCache::KVCache(const ModelConfig& cfg, int batch, DType dtype, Device device)
    : batch_(batch), n_layer_(cfg.n_layer), n_kv_head_(cfg.n_kv_head), head_dim_(cfg.head_dim), dtype_(dtype),
      device_(device), capacity_(cfg.seq_len) {
  NW_CHECK(batch >= 1, "KV cache batch must be >= 1, got ", batch);
  const int64_t per = int64_t(batch) * capacity_ * cfg.n_kv_head * cfg.head_dim;
  block_ = Buffer(size_t(2 * cfg.n_layer * per) * dtype_size(dtype), device);
  char* base = static_cast<char*>(block_.data());
  for (int l = 0; l < cfg.n_layer; ++l)
    for (auto* list : {&keys_, &values_}) {
      list->emplace_back(base, dtype, device, std::initializer_list<int64_t>{batch, capacity_, cfg.n_kv_head, cfg.head_dim});
      base += per * dtype_size(dtype);
    }
}

bool KVCache::fits(const ModelConfig& cfg, DType dtype, Device device) const {
  return cfg.n_layer == n_layer_ && cfg.n_kv_head == n_kv_head_ && cfg.head_dim == head_dim_ &&
         cfg.seq_len == capacity_ && dtype == dtype_ && device == device_;
}

}  // namespace nw
