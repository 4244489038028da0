// One register function per binding domain (each in its own file).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "core/graphed_step.h"
#include "core/tensor.h"
#include "model/sampler.h"

namespace nw::bindings {
namespace py = pybind11;

void register_core(py::module_& m);
void register_model(py::module_& m);
void register_optimizer(py::module_& m);
void register_data(py::module_& m);
void register_distributed(py::module_& m);
void register_batching(py::module_& m);

// A NumPy integer array of exactly `ndim` dimensions, as a contiguous int32 copy; ValueError otherwise.
py::array_t<int32_t> as_int32(const py::object& obj, const char* what, int ndim);
// Numbers from Python, checked: ValueError naming `what` when the value is not a number of the right kind or
// does not fit, never pybind11's overflow-as-TypeError (2^80 as a uint64_t argument) or a silent wrap.
int int_arg(const py::handle& v, const char* what, int lo, int hi);
uint64_t seed_arg(const py::handle& v, const char* what);  // 0 .. 2^64 - 1
float float_arg(const py::handle& v, const char* what);    // any real (NaN and inf are for validate() to refuse)
// Sampling settings and stop-token lists from Python arguments, checked (model.cpp).
SamplingParams sampling_args(const py::object& temperature, const py::object& top_k, const py::object& top_p,
                             const py::object& seed);
std::vector<int32_t> token_list(const py::object& ids, const char* what);
Device parse_device(const std::string& name);
// Host copies of device tensors, as float32/float64 NumPy arrays, and back (shape-checked).
py::array tensor_to_numpy(const Tensor& t);
void numpy_to_tensor(const Tensor& t, const py::object& value, const std::string& name);
DType parse_dtype(const std::string& name);
// {"captures", "replays", "failure"} of a step's CUDA graph (core/graphed_step.h).
py::dict graph_stats(const GraphedStep& g);
}  // namespace nw::bindings
