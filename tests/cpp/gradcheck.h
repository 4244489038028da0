// gradcheck.h: a small float64 finite-difference harness for op backwards, plus host tensors that
// own their storage and hand out nw::Tensor views.
//
// For an op with inputs x_1..x_m and outputs y_1..y_n the harness checks the analytic input gradients
// of the scalar L = sum_o sum(y_o * R_o) (+ an optional extra scalar the forward returns, e.g. the MoE
// balance loss) against central differences (L(x + eps e_i) - L(x - eps e_i)) / (2 eps) in float64.
// R_o is a fixed random tensor (or ones / zeros), and it is what the backward receives as dy_o.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace nwtest {

inline int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

// A contiguous float64 CPU tensor that owns its storage.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<double> data;

  HostTensor() = default;
  explicit HostTensor(std::vector<int64_t> s, double fill = 0.0) : shape(std::move(s)), data(product(shape), fill) {}

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  double& operator[](int64_t i) { return data[i]; }
  double operator[](int64_t i) const { return data[i]; }
  nw::Tensor t() { return nw::Tensor(data.data(), nw::DType::F64, nw::Device::CPU, shape); }
};

// A contiguous int32 CPU tensor (token ids, expert ids, offsets).
struct HostI32 {
  std::vector<int64_t> shape;
  std::vector<int32_t> data;

  HostI32() = default;
  HostI32(std::vector<int64_t> s, std::vector<int32_t> values) : shape(std::move(s)), data(std::move(values)) {
    EXPECT_EQ(static_cast<int64_t>(data.size()), product(shape)) << "HostI32: values do not match the shape";
    data.resize(product(shape));
  }
  explicit HostI32(std::vector<int64_t> s, int32_t fill = 0) : shape(std::move(s)), data(product(shape), fill) {}

  int32_t& operator[](int64_t i) { return data[i]; }
  int32_t operator[](int64_t i) const { return data[i]; }
  nw::Tensor t() { return nw::Tensor(data.data(), nw::DType::I32, nw::Device::CPU, shape); }
};

// Standard normals from the counter RNG, times scale.
inline HostTensor randn(std::vector<int64_t> shape, uint64_t seed, uint64_t stream, double scale = 1.0) {
  HostTensor h(std::move(shape));
  for (int64_t i = 0; i < h.numel(); ++i) h[i] = scale * nw::rng_normal(seed, stream, static_cast<uint64_t>(i));
  return h;
}

// How the weight tensor R of an output (and hence its dy) is filled.
enum class Weight { Random, Ones, Zero };

struct GradInput {
  std::string name;
  HostTensor* x;     // perturbed by the finite differences
  HostTensor* grad;  // written by the backward (zeroed before it runs, so accumulating backwards work)
  bool expect_nonzero = true;  // also require that the true gradient is not (nearly) zero
};

struct GradOutput {
  std::string name;
  HostTensor* y;   // written by the forward
  HostTensor* dy;  // filled with R by the harness before the backward runs
  Weight weight = Weight::Random;
};

struct GradCheckOptions {
  double eps = 1e-6;
  double rtol = 1e-6;  // pass when max |analytic - numeric| <= rtol * (1 + max |numeric|)
  uint64_t seed = 20240601;
};

struct GradCheckResult {
  std::string name;
  double max_err = 0;    // max |analytic - numeric|
  double max_grad = 0;   // max |numeric|
  double tolerance = 0;
};

// forward: computes every output from the current inputs; returns an extra scalar added to L (0 if none).
// backward: reads each output's dy and writes each input's grad. Expectations are reported through
// gtest (non-fatal) with the worst element; the per-input results are returned for further checks.
inline std::vector<GradCheckResult> gradcheck(const std::vector<GradInput>& inputs,
                                              const std::vector<GradOutput>& outputs,
                                              const std::function<double()>& forward,
                                              const std::function<void()>& backward,
                                              const GradCheckOptions& opt = GradCheckOptions()) {
  // The weights R, one per output; R is also the upstream gradient dy.
  for (size_t o = 0; o < outputs.size(); ++o) {
    HostTensor& dy = *outputs[o].dy;
    EXPECT_EQ(dy.shape, outputs[o].y->shape) << "gradcheck: dy of " << outputs[o].name << " has the wrong shape";
    dy.data.assign(outputs[o].y->data.size(), 0.0);
    for (int64_t i = 0; i < dy.numel(); ++i) {
      switch (outputs[o].weight) {
        case Weight::Random: dy[i] = nw::rng_normal(opt.seed, 7000 + o, static_cast<uint64_t>(i)); break;
        case Weight::Ones: dy[i] = 1.0; break;
        case Weight::Zero: dy[i] = 0.0; break;
      }
    }
  }
  auto loss = [&]() {
    double L = forward();
    for (const GradOutput& out : outputs)
      for (int64_t i = 0; i < out.y->numel(); ++i) L += (*out.y)[i] * (*out.dy)[i];
    return L;
  };

  // Analytic gradients at the base point (the backward may use what the forward saved there).
  forward();
  for (const GradInput& in : inputs) {
    EXPECT_EQ(in.grad->shape, in.x->shape) << "gradcheck: grad of " << in.name << " has the wrong shape";
    in.grad->data.assign(in.x->data.size(), 0.0);
  }
  backward();
  std::vector<std::vector<double>> analytic;
  for (const GradInput& in : inputs) analytic.push_back(in.grad->data);

  std::vector<GradCheckResult> results;
  for (size_t a = 0; a < inputs.size(); ++a) {
    const GradInput& in = inputs[a];
    std::vector<double> numeric(in.x->data.size());
    for (int64_t i = 0; i < in.x->numel(); ++i) {
      const double x0 = (*in.x)[i];
      (*in.x)[i] = x0 + opt.eps;
      const double lp = loss();
      (*in.x)[i] = x0 - opt.eps;
      const double lm = loss();
      (*in.x)[i] = x0;
      numeric[i] = (lp - lm) / (2.0 * opt.eps);
    }
    GradCheckResult r;
    r.name = in.name;
    int64_t worst = -1;
    for (int64_t i = 0; i < in.x->numel(); ++i) {
      const double err = std::fabs(analytic[a][i] - numeric[i]);
      if (worst < 0 || err > r.max_err) {
        r.max_err = err;
        worst = i;
      }
      r.max_grad = std::max(r.max_grad, std::fabs(numeric[i]));
    }
    r.tolerance = opt.rtol * (1.0 + r.max_grad);
    if (worst >= 0) {
      EXPECT_LE(r.max_err, r.tolerance) << "gradient of " << in.name << " is wrong at flat index " << worst
                                        << ": analytic " << analytic[a][worst] << ", numeric " << numeric[worst]
                                        << " (max |numeric| " << r.max_grad << ")";
    }
    if (in.expect_nonzero) {
      EXPECT_GT(r.max_grad, 1e-4) << "gradient of " << in.name << " is ~0: the check would be vacuous";
    }
    results.push_back(r);
  }
  forward();  // leave the outputs at the base point
  return results;
}

}  // namespace nwtest
