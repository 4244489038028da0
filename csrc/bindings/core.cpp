// Bindings for core facilities: threads, devices, argument conversion.
#include <limits>
#include <type_traits>

#include "bindings/domains.h"
#include "core/cuda_device.h"
#include "core/peak_flops.h"
#include "core/profiler.h"
#include "core/threading.h"

namespace nw::bindings {

py::array_t<int32_t> as_int32(const py::object& obj, const char* what, int ndim) {
  py::array arr = py::array::ensure(obj);
  NW_CHECK(arr, what, " must be a NumPy integer array");
  const char kind = arr.dtype().kind();
  NW_CHECK(kind == 'i' || kind == 'u', what, " must have an integer dtype, got ", std::string(py::str(arr.dtype())));
  NW_CHECK(arr.ndim() == ndim, what, " must have ", ndim, " dimensions, got shape ", std::string(py::str(obj.attr("shape"))));
  py::array_t<int32_t> out(std::vector<py::ssize_t>(arr.shape(), arr.shape() + ndim));
  int32_t* dst = out.mutable_data();
  auto narrow = [&](auto wide) {  // unsigned arrays are read as uint64: forcing them to int64 would wrap 2^64-1 to -1
    const auto* src = wide.data();
    using T = std::remove_cv_t<std::remove_reference_t<decltype(*src)>>;
    constexpr int32_t lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
    for (py::ssize_t i = 0; i < wide.size(); ++i) {
      bool fits;
      if constexpr (std::is_unsigned_v<T>) fits = src[i] <= T(hi);
      else fits = src[i] >= lo && src[i] <= hi;
      NW_CHECK(fits, what, " value ", src[i], " does not fit in int32");
      dst[i] = static_cast<int32_t>(src[i]);
    }
  };
  if (kind == 'u') narrow(py::array_t<uint64_t, py::array::c_style | py::array::forcecast>(arr));
  else narrow(py::array_t<int64_t, py::array::c_style | py::array::forcecast>(arr));
  return out;
}

namespace {
std::string repr_of(const py::handle& v) {
  std::string r = py::repr(v);
  return r.size() > 60 ? r.substr(0, 60) + "..." : r;
}

// An int (or NumPy integer: anything with __index__), never a bool or a float.
py::int_ as_integer(const py::handle& v, const char* what) {
  NW_CHECK(!PyBool_Check(v.ptr()) && PyIndex_Check(v.ptr()), what, " must be an integer, got ", repr_of(v));
  return py::reinterpret_steal<py::int_>(PyNumber_Index(v.ptr()));
}
}  // namespace

int int_arg(const py::handle& v, const char* what, int lo, int hi) {
  const py::int_ n = as_integer(v, what);
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(n.ptr(), &overflow);
  NW_CHECK(!overflow && x >= lo && x <= hi, what, " must be in [", lo, ", ", hi, "], got ", repr_of(v));
  return static_cast<int>(x);
}

uint64_t seed_arg(const py::handle& v, const char* what) {
  const py::int_ n = as_integer(v, what);
  const unsigned long long x = PyLong_AsUnsignedLongLong(n.ptr());  // OverflowError when < 0 or >= 2^64
  const bool fits = !(x == static_cast<unsigned long long>(-1) && PyErr_Occurred());
  PyErr_Clear();
  NW_CHECK(fits, what, " must be in [0, 2^64 - 1], got ", repr_of(v));
  return x;
}

float float_arg(const py::handle& v, const char* what) {
  const bool real = !PyBool_Check(v.ptr()) && (PyFloat_Check(v.ptr()) || PyIndex_Check(v.ptr()) ||
                                                py::isinstance(v, py::module_::import("numbers").attr("Real")));
  NW_CHECK(real, what, " must be a real number, got ", repr_of(v));
  const double x = PyFloat_AsDouble(v.ptr());  // an int beyond a double's range raises OverflowError
  const bool fits = !(x == -1.0 && PyErr_Occurred());
  PyErr_Clear();
  NW_CHECK(fits, what, " is out of range, got ", repr_of(v));
  return static_cast<float>(x);  // beyond a float's range: +-inf, which validate() refuses
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda") return Device::CUDA;
  NW_CHECK(false, "device must be 'cpu' or 'cuda', got '", name, "'");
  return Device::CPU;
}

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::F32;
  if (name == "float64") return DType::F64;
  NW_CHECK(false, "dtype must be 'float32' or 'float64', got '", name, "'");
  return DType::F32;
}

py::dict graph_stats(const GraphedStep& g) {
  py::dict out;
  out["captures"] = g.captures();
  out["replays"] = g.replays();
  out["failure"] = g.failure();
  return out;
}

void register_core(py::module_& m) {
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "Threads for OpenMP loops and OpenBLAS.");
  m.def("get_num_threads", &get_num_threads);
  m.def("cuda_available", &cuda::available, "True when built with CUDA and a GPU is usable.");
  m.def("profile_ops", &profiler::set_enabled, py::arg("on") = true,
        "Time every op call (synchronising the GPU around each): for benchmarks, not for training runs.");
  m.def("reset_op_times", &profiler::reset);
  m.def("measure_peak_flops", &measure_peak_flops, py::arg("threads"), py::arg("seconds") = 0.5,
        py::call_guard<py::gil_scoped_release>(),
        "Measured fp32 FLOP/s of `threads` threads running register-resident FMA chains for ~`seconds`.");
  m.def("peak_flops_vector_width", &peak_flops_vector_width, "fp32 lanes per vector in measure_peak_flops.");
  m.def(
      "op_times",
      []() {
        py::dict out;
        for (const auto& t : profiler::snapshot()) out[py::str(t.op)] = py::make_tuple(t.seconds, t.calls);
        return out;
      },
      "{op: (total seconds, calls)} since the last reset, in first-call order.");
}

}  // namespace nw::bindings
