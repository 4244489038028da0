// all_reduce_gradients: one all-reduce per bucket over the whole gradient arena, in arena order, then the
// routing counts; checked with a communicator that records its calls (no MPI needed).
#include <gtest/gtest.h>

#include <vector>

#include "dist/data_parallel.h"
#include "model/model.h"

namespace {

struct Call {
  const void* data;
  int64_t numel;
  nw::DType dtype;
};

class RecordingCommunicator : public nw::dist::Communicator {
 public:
  std::vector<Call> calls;
  const char* backend() const override { return "recording"; }
  void all_reduce(const nw::Tensor& t, nw::dist::ReduceOp, const char*) override {
    calls.push_back({t.data, t.numel(), t.dtype});
  }
  void broadcast(const nw::Tensor&, int, const char*) override {}
  void barrier(const char*) override {}
  [[noreturn]] void abort(int) override { throw nw::Error("abort"); }
  void finalize() override {}
};

TEST(DataParallel, ReducesTheGradientArenaInBucketsThenTheRoutingCounts) {
  nw::Model model(nw::ModelConfig::preset("tiny"), 0);
  const nw::Tensor grads = model.grads().flat();
  const int64_t bucket = 100000;  // elements; the arena is not a multiple of it
  ASSERT_GT(grads.numel() % bucket, 0);
  RecordingCommunicator comm;
  nw::dist::all_reduce_gradients(comm, model, bucket * 4);
  const int64_t n_buckets = (grads.numel() + bucket - 1) / bucket;
  ASSERT_EQ(int64_t(comm.calls.size()), n_buckets + 1);
  int64_t covered = 0;
  for (int64_t i = 0; i < n_buckets; ++i) {  // contiguous, in order, covering the arena exactly
    EXPECT_EQ(comm.calls[i].data, static_cast<const float*>(grads.data) + covered);
    EXPECT_EQ(comm.calls[i].dtype, nw::DType::F32);
    covered += comm.calls[i].numel;
  }
  EXPECT_EQ(covered, grads.numel());
  EXPECT_EQ(comm.calls.back().data, model.pending_counts().data);
  EXPECT_EQ(comm.calls.back().dtype, nw::DType::I64);
  EXPECT_EQ(comm.calls.back().numel, model.pending_counts().numel());
}

TEST(DataParallel, RejectsAnEmptyBucket) {
  nw::Model model(nw::ModelConfig::preset("tiny"), 0);
  RecordingCommunicator comm;
  EXPECT_THROW(nw::dist::all_reduce_gradients(comm, model, 0), nw::ValueError);
}

}  // namespace
