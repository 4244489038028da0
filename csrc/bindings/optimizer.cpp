// Bindings for the optimizer.
#include <limits>

#include "bindings/domains.h"
#include "train/optimizer.h"

namespace nw::bindings {

namespace {
const Arena& state_arena(const Optimizer& o, const std::string& which) {
  if (which == "exp_avg") return o.exp_avg();
  NW_CHECK(which == "exp_avg_sq", "optimizer state must be 'exp_avg' or 'exp_avg_sq', got '", which, "'");
  return o.exp_avg_sq();
}
}  // namespace

void register_optimizer(py::module_& m) {
  py::class_<AdamGroup>(m, "AdamGroup", "AdamW hyperparameters of one parameter group.")
      .def(py::init([](float lr, float beta1, float beta2, float eps, float wd) { return AdamGroup{lr, beta1, beta2, eps, wd}; }),
           py::arg("lr"), py::arg("beta1") = 0.8f, py::arg("beta2") = 0.95f, py::arg("eps") = 1e-10f,
           py::arg("weight_decay") = 0.0f)
      .def_readwrite("lr", &AdamGroup::lr)
      .def_readwrite("beta1", &AdamGroup::beta1)
      .def_readwrite("beta2", &AdamGroup::beta2)
      .def_readwrite("eps", &AdamGroup::eps)
      .def_readwrite("weight_decay", &AdamGroup::weight_decay);

  py::class_<OptimizerConfig>(m, "OptimizerConfig",
                              "Muon for hidden matrices; AdamW groups embed, head, router, scalar (norm gains).")
      .def(py::init<>())
      .def_readwrite("muon_lr", &OptimizerConfig::muon_lr)
      .def_readwrite("muon_momentum", &OptimizerConfig::muon_momentum)
      .def_readwrite("muon_weight_decay", &OptimizerConfig::muon_weight_decay)
      .def_property(
          "ns_steps", [](const OptimizerConfig& c) { return c.ns_steps; },
          [](OptimizerConfig& c, const py::object& v) {  // out of int range: ValueError, not pybind's TypeError
            NW_CHECK(py::isinstance<py::int_>(v) && !py::isinstance<py::bool_>(v),
                     "OptimizerConfig.ns_steps must be an integer, got ", std::string(py::repr(v)));
            int overflow = 0;
            const long long n = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
            NW_CHECK(!overflow && n >= std::numeric_limits<int>::min() && n <= std::numeric_limits<int>::max(),
                     "OptimizerConfig.ns_steps ", std::string(py::repr(v)), " is out of range (validate() allows 1..20)");
            c.ns_steps = static_cast<int>(n);
          })
      .def_readwrite("nesterov", &OptimizerConfig::nesterov)
      .def_readwrite("embed", &OptimizerConfig::embed)
      .def_readwrite("head", &OptimizerConfig::head)
      .def_readwrite("router", &OptimizerConfig::router)
      .def_readwrite("scalar", &OptimizerConfig::scalar)
      .def_readwrite("grad_clip", &OptimizerConfig::grad_clip)
      .def("validate", &OptimizerConfig::validate);

  py::class_<Optimizer>(m, "Optimizer")
      .def(py::init<Model&, const OptimizerConfig&>(), py::arg("model"), py::arg("config") = OptimizerConfig(),
           py::keep_alive<1, 2>())
      .def("step",
           [](Optimizer& o, float lr_mult, float wd_mult, py::object muon_momentum, py::object balance_gamma) {
             StepArgs a;
             a.lr_mult = lr_mult;
             a.wd_mult = wd_mult;
             if (!muon_momentum.is_none()) {
               a.muon_momentum = muon_momentum.cast<float>();
               NW_CHECK(a.muon_momentum >= 0, "muon_momentum must be >= 0, got ", a.muon_momentum);
             }
             if (!balance_gamma.is_none()) {
               a.balance_gamma = balance_gamma.cast<float>();
               NW_CHECK(a.balance_gamma >= 0, "balance_gamma must be >= 0, got ", a.balance_gamma);
             }
             py::gil_scoped_release release;
             // A compute call on the model (its parameters, gradients and routing counts), whose capture in a
             // CUDA graph would also record work that another thread issued meanwhile.
             std::lock_guard<std::mutex> lock(o.model().compute_mutex());
             return o.step(a);
           },
           py::arg("lr_mult") = 1.0f, py::arg("wd_mult") = 1.0f, py::arg("muon_momentum") = py::none(),
           py::arg("balance_gamma") = py::none(),
           "Clip, update all parameters and the balance biases; returns the gradient norm before clipping.")
      .def_property("steps", &Optimizer::steps, &Optimizer::set_steps, "Optimizer steps taken (AdamW bias correction).")
      .def("get_state",
           [](const Optimizer& o, const std::string& which, const std::string& name) {
             const Arena& a = state_arena(o, which);
             return tensor_to_numpy(a.view(a.layout().index(name)));
           },
           py::arg("which"), py::arg("name"), "which: 'exp_avg' (Adam m / Muon momentum) or 'exp_avg_sq' (Adam v).")
      .def("set_state",
           [](Optimizer& o, const std::string& which, const std::string& name, const py::object& value) {
             const Arena& a = state_arena(o, which);
             numpy_to_tensor(a.view(a.layout().index(name)), value, name);
           },
           py::arg("which"), py::arg("name"), py::arg("value"))
      // A copy, as Model.config: the update (and its CUDA graph, whose launches hold these rates) runs with
      // the validated configuration it was made with.
      .def_property_readonly("config", [](const Optimizer& o) { return o.config(); },
                             "The optimizer's configuration (a copy: it is fixed at construction).")
      .def(
          "cuda_graph_stats", [](const Optimizer& o) { return graph_stats(o.graph()); },
          "The update's CUDA graph (on with the model's cuda_graphs): {'captures', 'replays' (graph launches), "
          "'failure' (why a capture failed, after which updates run eagerly; '' if none)}.");
}

}  // namespace nw::bindings
