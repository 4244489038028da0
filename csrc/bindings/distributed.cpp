// Bindings for data-parallel communication (csrc/dist/).
#include "bindings/domains.h"
#include "dist/communicator.h"
#include "dist/data_parallel.h"

namespace nw::bindings {

namespace {

using dist::Communicator;
using dist::ReduceOp;

// A writable C-contiguous NumPy array seen as a host tensor (float32, float64 or int64).
Tensor host_view(const py::object& obj, const char* what) {
  NW_CHECK(py::isinstance<py::array>(obj), what, " needs a NumPy array, got ", std::string(py::str(py::type::of(obj))));
  py::array a = obj.cast<py::array>();
  NW_CHECK(a.writeable() && (a.flags() & py::array::c_style), what, " needs a writable C-contiguous array");
  DType t;
  const char kind = a.dtype().kind();
  if (kind == 'f' && a.itemsize() == 4) t = DType::F32;
  else if (kind == 'f' && a.itemsize() == 8) t = DType::F64;
  else if (kind == 'i' && a.itemsize() == 8) t = DType::I64;
  else NW_CHECK(false, what, " takes float32, float64 or int64 arrays, got ", std::string(py::str(a.dtype())));
  return Tensor(a.mutable_data(), t, Device::CPU, {int64_t(a.size())});
}

ReduceOp parse_op(const std::string& op) {
  if (op == "sum") return ReduceOp::Sum;
  NW_CHECK(op == "max", "op must be 'sum' or 'max', got '", op, "'");
  return ReduceOp::Max;
}

}  // namespace

void register_distributed(py::module_& m) {
  m.def("mpi_available", [] {
        std::string why;
        const bool ok = dist::mpi_available(&why);
        return py::make_tuple(ok, why);
      },
      "(True, '') when the MPI plugin loads, else (False, why). Loads libmpi into the process.");

  py::class_<Communicator>(m, "Communicator",
                           "Rank, world size and collectives of this job's processes: MPI for host buffers, NCCL "
                           "(bootstrapped over MPI) for GPU buffers when device='cuda'. One per process.")
      .def(py::init([](const std::string& device, double timeout) {
             py::gil_scoped_release release;
             return dist::make_communicator(parse_device(device), timeout);
           }),
           py::arg("device") = "cpu", py::arg("timeout") = 300.0)
      .def_property_readonly("rank", &Communicator::rank)
      .def_property_readonly("world_size", &Communicator::world_size)
      .def_property_readonly("local_rank", &Communicator::local_rank)
      .def_property_readonly("local_world_size", &Communicator::local_world_size)
      .def_property_readonly("backend", &Communicator::backend)
      .def_property("timeout", &Communicator::timeout, &Communicator::set_timeout,
                    "Seconds a collective waits for the other ranks before naming the silent ones.")
      .def("all_reduce",
           [](Communicator& c, const py::object& array, const std::string& op, const std::string& what) {
             const Tensor t = host_view(array, what.c_str());
             const ReduceOp o = parse_op(op);
             py::gil_scoped_release release;
             c.all_reduce(t, o, what.c_str());
           },
           py::arg("array"), py::arg("op") = "sum", py::arg("what") = "all-reduce",
           "In place over a NumPy array (float32, float64, int64): every rank ends with the sum (or max).")
      .def("broadcast",
           [](Communicator& c, const py::object& array, int root, const std::string& what) {
             const Tensor t = host_view(array, what.c_str());
             py::gil_scoped_release release;
             c.broadcast(t, root, what.c_str());
           },
           py::arg("array"), py::arg("root") = 0, py::arg("what") = "broadcast")
      .def("barrier",
           [](Communicator& c, const std::string& what) {
             py::gil_scoped_release release;
             c.barrier(what.c_str());
           },
           py::arg("what") = "barrier")
      .def("all_reduce_gradients",
           [](Communicator& c, Model& model, int64_t bucket_bytes) {
             py::gil_scoped_release release;
             dist::all_reduce_gradients(c, model, bucket_bytes);
           },
           py::arg("model"), py::arg("bucket_bytes") = int64_t(32) << 20,
           "Sums the model's gradient arena (in buckets, arena order) and pending routing counts over the ranks.")
      .def("abort", [](Communicator& c, int code) { c.abort(code); }, py::arg("code") = 1,
           "Ends every process of the job (MPI_Abort).")
      .def("finalize", [](Communicator& c) {
             py::gil_scoped_release release;
             c.finalize();
           });
}

}  // namespace nw::bindings
