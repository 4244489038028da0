#include "core/arena.h"

namespace nw {

namespace {
constexpr int64_t kPad = 16;
}

int Layout::add(const std::string& name, std::vector<int64_t> shape) {
  NW_ASSERT(find(name) < 0, "duplicate layout entry ", name);
  LayoutEntry e;
  e.name = name;
  e.numel = 1;
  for (int64_t s : shape) e.numel *= s;
  e.shape = std::move(shape);
  e.offset = total_;
  total_ += (e.numel + kPad - 1) / kPad * kPad;
  entries_.push_back(std::move(e));
  return size() - 1;
}

int Layout::find(const std::string& name) const {
  for (int i = 0; i < size(); ++i)
    if (entries_[i].name == name) return i;
  return -1;
}

int Layout::index(const std::string& name) const {
  int i = find(name);
  NW_CHECK(i >= 0, "no tensor named '", name, "'");
  return i;
}

Arena::Arena(std::shared_ptr<const Layout> layout, DType dtype, Device device)
    : layout_(std::move(layout)), dtype_(dtype), buffer_(layout_->total() * dtype_size(dtype), device) {}

Tensor Arena::view(int i) const {
  const LayoutEntry& e = (*layout_)[i];
  return Tensor(static_cast<char*>(buffer_.data()) + e.offset * dtype_size(dtype_), dtype_, device(), e.shape);
}

Tensor Arena::flat() const { return Tensor(buffer_.data(), dtype_, device(), {layout_->total()}); }

}  // namespace nw
