// CUDA graphs (core/cuda_graph.h) and the capture policy of training work (core/graphed_step.h). The
// graph tests need a GPU (need_cuda.h) and sit in the CudaParity suite, the one the GPU check runs;
// GraphedStep's CPU behaviour is checked everywhere.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/cuda_graph.h"
#include "core/graphed_step.h"
#include "ops/optimizer_ops.h"
#include "need_cuda.h"

namespace {

using F = std::vector<float>;

struct DeviceVector {
  nw::Buffer buf;
  nw::Tensor t;
  explicit DeviceVector(const F& v)
      : buf(v.size() * sizeof(float), nw::Device::CUDA),
        t(buf.data(), nw::DType::F32, nw::Device::CUDA, {int64_t(v.size())}) {
    nw::copy_from_host(t, v.data());
  }
  F read() const {
    F v(t.numel());
    nw::copy_to_host(v.data(), t);
    return v;
  }
};

TEST(CudaParity, GraphReplaysTheCapturedWorkAndNotTheCapture) {
  NW_NEED_CUDA();
  DeviceVector x(F(1000, 1.f));
  nw::cuda::Graph g;
  EXPECT_TRUE(g.empty());
  g.capture([&] { nw::scale_inplace(x.t, 2.f); });
  EXPECT_FALSE(g.empty());
  EXPECT_EQ(x.read(), F(1000, 1.f)) << "capturing ran the work";
  for (int i = 0; i < 3; ++i) g.replay();
  EXPECT_EQ(x.read(), F(1000, 8.f));
  g.reset();
  EXPECT_TRUE(g.empty());
  EXPECT_THROW(g.replay(), nw::Error);
}

TEST(CudaParity, GraphCaptureOfAHostReadFailsClearlyAndTheStreamStaysUsable) {
  NW_NEED_CUDA();
  DeviceVector x(F(64, 1.f));
  nw::cuda::Graph g;
  F seen(64);
  try {
    g.capture([&] {
      nw::scale_inplace(x.t, 2.f);
      nw::copy_to_host(seen.data(), x.t);
    });
    FAIL() << "a host read was captured";
  } catch (const nw::Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA graph capture failed"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(g.empty());
  nw::scale_inplace(x.t, 3.f);  // eager work after the failed capture runs as usual
  EXPECT_EQ(x.read(), F(64, 3.f));
}

TEST(CudaParity, GraphedStepRunsEagerThenCapturesThenReplays) {
  NW_NEED_CUDA();
  DeviceVector x(F(256, 1.f));
  nw::GraphedStep step;
  step.set_enabled(true);
  int host_runs = 0;
  auto work = [&] {
    ++host_runs;
    nw::scale_inplace(x.t, 2.f);
  };
  for (int i = 0; i < 5; ++i) step.run(nw::Device::CUDA, {7}, work);
  // eager, capture + launch, then 3 launches: the host code ran twice, the device work 5 times
  EXPECT_EQ(host_runs, 2);
  EXPECT_EQ(step.captures(), 1);
  EXPECT_EQ(step.replays(), 4);
  EXPECT_EQ(x.read(), F(256, 32.f));
  EXPECT_TRUE(step.failure().empty()) << step.failure();
  step.run(nw::Device::CUDA, {8}, work);  // another key: eager again
  EXPECT_EQ(host_runs, 3);
  EXPECT_EQ(step.replays(), 4);
  step.set_enabled(false);
  step.run(nw::Device::CUDA, {8}, work);
  step.run(nw::Device::CUDA, {8}, work);
  EXPECT_EQ(host_runs, 5);
  EXPECT_EQ(x.read(), F(256, 256.f));
}

TEST(CudaParity, GraphedStepFallsBackToEagerWhenTheWorkCannotBeCaptured) {
  NW_NEED_CUDA();
  DeviceVector x(F(32, 1.f));
  nw::GraphedStep step;
  step.set_enabled(true);
  F seen(32);
  auto work = [&] {
    nw::scale_inplace(x.t, 2.f);
    nw::copy_to_host(seen.data(), x.t);  // a host read: cannot be in a graph
  };
  for (int i = 0; i < 4; ++i) step.run(nw::Device::CUDA, {1}, work);
  EXPECT_EQ(x.read(), F(32, 16.f)) << "each run applies the work exactly once";
  EXPECT_EQ(seen, F(32, 16.f));
  EXPECT_EQ(step.captures(), 0);
  EXPECT_EQ(step.replays(), 0);
  EXPECT_NE(step.failure().find("CUDA graph capture failed"), std::string::npos) << step.failure();
}

TEST(GraphedStep, RunsTheWorkEagerlyEveryTimeOnTheCpu) {
  nw::GraphedStep step;
  step.set_enabled(true);
  int runs = 0;
  for (int i = 0; i < 4; ++i) step.run(nw::Device::CPU, {3}, [&] { ++runs; });
  EXPECT_EQ(runs, 4);
  EXPECT_EQ(step.captures(), 0);
  EXPECT_EQ(step.replays(), 0);
  EXPECT_TRUE(step.failure().empty());
}

}  // namespace
