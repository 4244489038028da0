// Arenas: one flat buffer holding many named tensors. Parameters, gradients and optimizer states
// share one Layout, so checkpointing, clipping and optimizer steps are loops over one buffer and
// entry i means the same tensor in each of them.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/buffer.h"

namespace nw {

struct LayoutEntry {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // in elements from the start of the arena
  int64_t numel = 0;
};

class Layout {
 public:
  // Adds an entry; offsets are padded to 16 elements so every tensor starts 64-byte aligned.
  int add(const std::string& name, std::vector<int64_t> shape);
  int find(const std::string& name) const;  // -1 if absent
  int index(const std::string& name) const;  // ValueError if absent
  const LayoutEntry& operator[](int i) const { return entries_[i]; }
  int size() const { return static_cast<int>(entries_.size()); }
  int64_t total() const { return total_; }  // elements, including padding

 private:
  std::vector<LayoutEntry> entries_;
  int64_t total_ = 0;
};

class Arena {
 public:
  Arena() = default;
  Arena(std::shared_ptr<const Layout> layout, DType dtype, Device device);

  Tensor view(int i) const;        // entry i with its shape
  Tensor flat() const;             // the whole arena as one 1-D tensor (padding included)
  const Layout& layout() const { return *layout_; }
  DType dtype() const { return dtype_; }
  Device device() const { return buffer_.device(); }
  void zero() { buffer_.zero(); }

 private:
  std::shared_ptr<const Layout> layout_;
  DType dtype_ = DType::F32;
  Buffer buffer_;
};

}  // namespace nw
