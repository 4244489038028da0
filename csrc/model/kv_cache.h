// Keys and values of every layer for incremental decoding: (B, seq_len, KVH, D) per layer, filled
// from position 0 up to length(). One cache belongs to one model and one batch size.
#pragma once
#include <vector>

#include "core/buffer.h"
#include "model/config.h"

namespace nw {

class KVCache {
 public:
  KVCache(const ModelConfig& cfg, int batch, DType dtype, Device device);
  int batch() const { return batch_; }
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  void reset() { length_ = 0; }
  const Tensor& keys(int layer) const { return keys_[layer]; }
  const Tensor& values(int layer) const { return values_[layer]; }
  void advance(int64_t n) { length_ += n; }
  // True when this cache's shapes fit a model of this configuration.
  bool fits(const ModelConfig& cfg, DType dtype, Device device) const;

 private:
  int batch_, n_layer_, n_kv_head_, head_dim_;
  DType dtype_;
  Device device_;
  int64_t length_ = 0, capacity_;
  Buffer block_;
  std::vector<Tensor> keys_, values_;  // (B, capacity, KVH, D) each
};

}  // namespace nw
