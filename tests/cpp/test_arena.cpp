// Core memory views: Layout (16-element / 64-byte aligned offsets, no overlap, total, find/index),
// Arena views and flat(), Tensor::view / first / slice_rows, and the argument checks every op uses
// (check_tensor, check_same) with their error types.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/buffer.h"
#include "core/tensor.h"

namespace {
std::shared_ptr<nw::Layout> sample_layout() {
  auto l = std::make_shared<nw::Layout>();
  l->add("a", {3});         // 3 elements  -> padded to 16
  l->add("b", {4, 5});      // 20          -> 32
  l->add("c", {16});        // exactly 16  -> 16
  l->add("d", {1});         // 1           -> 16
  l->add("e", {2, 3, 17});  // 102         -> 112
  return l;
}
int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }
}  // namespace

TEST(Layout, OffsetsAlignedNonOverlappingAndTotal) {
  auto l = sample_layout();
  ASSERT_EQ(l->size(), 5);
  const std::vector<int64_t> expect_offsets = {0, 16, 48, 64, 80};
  const std::vector<int64_t> expect_numel = {3, 20, 16, 1, 102};
  for (int i = 0; i < l->size(); ++i) {
    const nw::LayoutEntry& e = (*l)[i];
    EXPECT_EQ(e.offset, expect_offsets[i]) << e.name;
    EXPECT_EQ(e.numel, expect_numel[i]) << e.name;
    EXPECT_EQ(e.offset % 16, 0) << e.name;
    if (i + 1 < l->size()) {
      EXPECT_LE(e.offset + e.numel, (*l)[i + 1].offset) << e.name << " overlaps the next entry";
    }
  }
  EXPECT_EQ((*l)[4].shape, (std::vector<int64_t>{2, 3, 17}));
  EXPECT_EQ(l->total(), 80 + round16(102));
  EXPECT_EQ(l->total() % 16, 0);
}

TEST(Layout, FindAndIndex) {
  auto l = sample_layout();
  EXPECT_EQ(l->find("a"), 0);
  EXPECT_EQ(l->find("c"), 2);
  EXPECT_EQ(l->index("e"), 4);
  EXPECT_EQ(l->find("nope"), -1);
  EXPECT_THROW(l->index("nope"), nw::ValueError);
  try {
    l->index("missing_name");
    FAIL() << "index() of an unknown name must throw";
  } catch (const nw::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("missing_name"), std::string::npos) << e.what();
  }
}

TEST(Layout, DuplicateNameIsRejected) {
  nw::Layout l;
  l.add("w", {4});
  EXPECT_ANY_THROW(l.add("w", {8}));
  EXPECT_EQ(l.size(), 1);
}

TEST(Arena, ViewsHaveShapesOffsetsAndAlignment) {
  auto layout = sample_layout();
  for (nw::DType dt : {nw::DType::F32, nw::DType::F64}) {
    nw::Arena arena(layout, dt, nw::Device::CPU);
    const nw::Tensor flat = arena.flat();
    EXPECT_EQ(flat.ndim, 1);
    EXPECT_EQ(flat.numel(), layout->total());
    EXPECT_EQ(flat.dtype, dt);
    const char* base = static_cast<const char*>(flat.data);
    for (int i = 0; i < layout->size(); ++i) {
      const nw::Tensor v = arena.view(i);
      EXPECT_EQ(v.dims(), (*layout)[i].shape) << (*layout)[i].name;
      EXPECT_EQ(v.dtype, dt);
      EXPECT_EQ(static_cast<const char*>(v.data) - base, (*layout)[i].offset * int64_t(nw::dtype_size(dt)));
      EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data) % 64, 0u) << (*layout)[i].name << " is not 64-byte aligned";
    }
  }
}

TEST(Arena, StartsZeroedViewsDoNotAliasAndZeroClears) {
  auto layout = sample_layout();
  nw::Arena arena(layout, nw::DType::F32, nw::Device::CPU);
  const nw::Tensor flat = arena.flat();
  const float* f = flat.ptr<float>();
  for (int64_t i = 0; i < flat.numel(); ++i) ASSERT_EQ(f[i], 0.0f) << "arena not zero-initialised at " << i;
  // Fill every view with its index + 1, then check each view still holds only its own value.
  for (int i = 0; i < layout->size(); ++i) {
    const nw::Tensor v = arena.view(i);
    for (int64_t j = 0; j < v.numel(); ++j) v.ptr<float>()[j] = float(i + 1);
  }
  for (int i = 0; i < layout->size(); ++i) {
    const nw::Tensor v = arena.view(i);
    for (int64_t j = 0; j < v.numel(); ++j) ASSERT_EQ(v.ptr<float>()[j], float(i + 1)) << (*layout)[i].name;
  }
  // Entry "b" (index 1) seen through the flat view.
  EXPECT_EQ(f[16], 2.0f);
  EXPECT_EQ(f[16 + 19], 2.0f);
  EXPECT_EQ(f[16 + 20], 0.0f) << "padding after b must stay untouched";
  arena.zero();
  for (int64_t i = 0; i < flat.numel(); ++i) ASSERT_EQ(f[i], 0.0f);
}

TEST(Arena, SharedLayoutGivesParallelArenas) {
  // Parameters, gradients and optimizer state share a layout: entry i is the same tensor in each.
  auto layout = sample_layout();
  nw::Arena p(layout, nw::DType::F32, nw::Device::CPU), g(layout, nw::DType::F32, nw::Device::CPU);
  EXPECT_NE(p.flat().data, g.flat().data);
  EXPECT_EQ(&p.layout(), &g.layout());
  for (int i = 0; i < layout->size(); ++i) EXPECT_EQ(p.view(i).dims(), g.view(i).dims());
}

// ---------------------------------------------------------------------------------------------
TEST(Tensor, ShapeNumelDescribe) {
  std::vector<float> buf(24);
  nw::Tensor t(buf.data(), nw::DType::F32, nw::Device::CPU, {2, 3, 4});
  EXPECT_EQ(t.ndim, 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(t.size(0), 2);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(t.describe(), "float32[2, 3, 4] on cpu");
  EXPECT_TRUE(t.defined());
  EXPECT_FALSE(nw::Tensor().defined());
  EXPECT_THROW(nw::Tensor(buf.data(), nw::DType::F32, nw::Device::CPU, {1, 1, 1, 1, 24}), nw::ValueError);
  EXPECT_THROW(nw::Tensor(buf.data(), nw::DType::F32, nw::Device::CPU, {-1, 4}), nw::ValueError);
  EXPECT_THROW(t.ptr<double>(), nw::Error) << "ptr<T>() must check the dtype";
}

TEST(Tensor, ViewFirstSliceRows) {
  std::vector<double> buf(24);
  for (int i = 0; i < 24; ++i) buf[i] = i;
  nw::Tensor t(buf.data(), nw::DType::F64, nw::Device::CPU, {6, 4});
  const nw::Tensor v = t.view({2, 12});
  EXPECT_EQ(v.data, t.data);
  EXPECT_EQ(v.dims(), (std::vector<int64_t>{2, 12}));
  EXPECT_THROW(t.view({5, 5}), nw::Error);

  const nw::Tensor f = t.first({3, 5});
  EXPECT_EQ(f.data, t.data);
  EXPECT_EQ(f.numel(), 15);
  EXPECT_THROW(t.first({5, 5}), nw::Error);

  const nw::Tensor s = t.slice_rows(2, 5);
  EXPECT_EQ(s.dims(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(s.ptr<double>()[0], 8.0);   // row 2, column 0
  EXPECT_EQ(s.ptr<double>()[11], 19.0); // row 4, column 3
  EXPECT_EQ(t.slice_rows(6, 6).numel(), 0);
  EXPECT_THROW(t.slice_rows(4, 7), nw::Error);
  EXPECT_THROW(t.slice_rows(3, 2), nw::Error);
  EXPECT_THROW(t.slice_rows(-1, 2), nw::Error);
  // Slicing a 3-D tensor moves by whole (rows of) matrices.
  nw::Tensor t3(buf.data(), nw::DType::F64, nw::Device::CPU, {3, 2, 4});
  EXPECT_EQ(t3.slice_rows(1, 2).ptr<double>()[0], 8.0);
  EXPECT_EQ(t3.slice_rows(2, 3).dims(), (std::vector<int64_t>{1, 2, 4}));
}

TEST(Tensor, RowMajorStridesAndContiguity) {
  std::vector<float> buf(24);
  nw::Tensor t(buf.data(), nw::DType::F32, nw::Device::CPU, {2, 3, 4});
  EXPECT_EQ(t.strides[0], 12);
  EXPECT_EQ(t.strides[1], 4);
  EXPECT_EQ(t.strides[2], 1);
  EXPECT_TRUE(t.contiguous());
  const nw::Tensor v = t.view({6, 4});
  EXPECT_EQ(v.strides[0], 4);
  EXPECT_EQ(v.strides[1], 1);
  EXPECT_TRUE(t.slice_rows(1, 2).contiguous());
  EXPECT_TRUE(t.first({5}).contiguous());
  // A column-strided view (every other column of a (3, 8) buffer) is not contiguous, and ops refuse it.
  nw::Tensor cols(buf.data(), nw::DType::F32, nw::Device::CPU, {3, 4});
  cols.strides[0] = 8;
  cols.strides[1] = 2;
  EXPECT_FALSE(cols.contiguous());
  EXPECT_THROW(nw::check_tensor(cols, "my_op", "x", nw::DType::F32, nw::Device::CPU, {3, 4}), nw::ValueError);
  // Size-1 dimensions may carry any stride.
  nw::Tensor row(buf.data(), nw::DType::F32, nw::Device::CPU, {1, 4});
  row.strides[0] = 100;
  EXPECT_TRUE(row.contiguous());
}

TEST(Tensor, CheckTensorAcceptsAndRejects) {
  std::vector<float> buf(12);
  nw::Tensor t(buf.data(), nw::DType::F32, nw::Device::CPU, {3, 4});
  const auto F32 = nw::DType::F32;
  const auto CPU = nw::Device::CPU;
  EXPECT_NO_THROW(nw::check_tensor(t, "my_op", "x", F32, CPU, {3, 4}));
  EXPECT_THROW(nw::check_tensor(t, "my_op", "x", nw::DType::F64, CPU, {3, 4}), nw::ValueError);
  EXPECT_THROW(nw::check_tensor(t, "my_op", "x", F32, nw::Device::CUDA, {3, 4}), nw::ValueError);
  EXPECT_THROW(nw::check_tensor(t, "my_op", "x", F32, CPU, {4, 3}), nw::ValueError);
  EXPECT_THROW(nw::check_tensor(t, "my_op", "x", F32, CPU, {12}), nw::ValueError);
  EXPECT_THROW(nw::check_tensor(t, "my_op", "x", F32, CPU, {3, 4, 1}), nw::ValueError);
  EXPECT_THROW(nw::check_tensor(nw::Tensor(), "my_op", "x", F32, CPU, {3, 4}), nw::ValueError);
  try {
    nw::check_tensor(t, "my_op", "weight", F32, CPU, {3, 5});
    FAIL() << "expected a ValueError";
  } catch (const nw::ValueError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("my_op"), std::string::npos) << msg;
    EXPECT_NE(msg.find("weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[3, 5]"), std::string::npos) << msg;
  }
  std::vector<double> dbuf(12);
  nw::Tensor d(dbuf.data(), nw::DType::F64, nw::Device::CPU, {3, 4});
  EXPECT_NO_THROW(nw::check_same(t, t, "my_op"));
  EXPECT_THROW(nw::check_same(t, d, "my_op"), nw::ValueError);
}

TEST(Tensor, ErrorTypes) {
  // ValueError is an invalid_argument (Python ValueError), Error a runtime_error (RuntimeError).
  EXPECT_THROW(throw nw::ValueError("x"), std::invalid_argument);
  EXPECT_THROW(throw nw::Error("x"), std::runtime_error);
  EXPECT_THROW(NW_CHECK(1 + 1 == 3, "math ", 42), nw::ValueError);
  EXPECT_NO_THROW(NW_CHECK(1 + 1 == 2, "math"));
}

TEST(Buffer, CopyAndZeroHelpers) {
  std::vector<float> a = {1, 2, 3, 4}, b(4, 0.0f);
  nw::Tensor ta(a.data(), nw::DType::F32, nw::Device::CPU, {4}), tb(b.data(), nw::DType::F32, nw::Device::CPU, {2, 2});
  nw::copy_tensor(tb, ta);
  EXPECT_EQ(b, a);
  nw::zero_tensor(ta);
  EXPECT_EQ(a, (std::vector<float>(4, 0.0f)));
  std::vector<float> host = {5, 6, 7, 8};
  nw::copy_from_host(ta, host.data());
  EXPECT_EQ(a, host);
  std::vector<float> back(4);
  nw::copy_to_host(back.data(), tb);
  EXPECT_EQ(back, (std::vector<float>{1, 2, 3, 4}));
}
