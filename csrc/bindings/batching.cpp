// Bindings for ContinuousBatch, the server's batching engine. step() runs with the GIL released.
#include <pybind11/stl.h>

#include <climits>
#include <mutex>

#include "bindings/domains.h"
#include "model/continuous_batch.h"
#include "model/model.h"

namespace nw::bindings {

namespace {
// The batch with a reference to its Python Model (which must outlive it) and a lock: the server adds and
// cancels generations from request threads while its loop thread runs step().
struct OwnedBatch : ContinuousBatch {
  py::object owner;
  std::mutex mutex;
  OwnedBatch(py::object model_obj, Model& m, int slots) : ContinuousBatch(m, slots), owner(std::move(model_obj)) {}
};
}  // namespace

void register_batching(py::module_& m) {
  py::class_<OwnedBatch>(m, "ContinuousBatch",
                         "Continuous batching: up to `slots` generations share one KV cache (a row each) and one "
                         "forward per decode step; each joins between steps and samples with its own settings.")
      .def(py::init([](const py::object& model, const py::object& slots) {
             Model& mdl = model.cast<Model&>();
             return std::make_unique<OwnedBatch>(model, mdl, int_arg(slots, "slots", 1, 4096));
           }),
           py::arg("model"), py::arg("slots"))
      .def("add",
           [](OwnedBatch& b, const py::object& prompt, const py::object& max_new_tokens, const py::object& temperature,
              const py::object& top_k, const py::object& top_p, const py::object& seed, const py::object& stop_tokens) {
             auto p = as_int32(prompt, "prompt", 1);
             const SamplingParams sp = sampling_args(temperature, top_k, top_p, seed);
             const int max_new = int_arg(max_new_tokens, "max_new_tokens", INT_MIN, INT_MAX);
             std::vector<int32_t> stops = token_list(stop_tokens, "stop_tokens");
             py::gil_scoped_release release;  // waiting for a step to end must not hold up other Python threads
             std::lock_guard<std::mutex> lock(b.mutex);
             return b.add(p.data(), int(p.shape(0)), max_new, sp, std::move(stops));
           },
           py::arg("prompt"), py::arg("max_new_tokens"), py::arg("temperature") = 1.0f, py::arg("top_k") = 0,
           py::arg("top_p") = 1.0f, py::arg("seed") = 0, py::arg("stop_tokens") = py::list(),
           "Admits a generation of prompt (Tp) int ids into a free slot; returns its id. ValueError when every slot "
           "is taken or an argument is out of range.")
      .def("cancel",
           [](OwnedBatch& b, int64_t id) {
             py::gil_scoped_release release;
             std::lock_guard<std::mutex> lock(b.mutex);
             b.cancel(id);
           },
           py::arg("id"), "Ends a generation early; its slot is free again.")
      .def("step",
           [](OwnedBatch& b) {
             std::vector<ContinuousBatch::Token> tokens;
             {
               py::gil_scoped_release release;
               std::lock_guard<std::mutex> lock(b.mutex);
               std::lock_guard<std::mutex> compute(b.model().compute_mutex());
               tokens = b.step();
             }
             const py::ssize_t n = py::ssize_t(tokens.size());
             py::array_t<int64_t> ids(n);
             py::array_t<int32_t> toks(n);
             py::array_t<bool> finished(n), stopped(n);
             for (py::ssize_t i = 0; i < n; ++i) {
               ids.mutable_at(i) = tokens[i].id;
               toks.mutable_at(i) = tokens[i].token;
               finished.mutable_at(i) = tokens[i].finished;
               stopped.mutable_at(i) = tokens[i].stopped;
             }
             return py::make_tuple(ids, toks, finished, stopped);
           },
           "Prefills the generations that joined, then one token for every active generation: (ids int64, tokens "
           "int32, finished bool, stopped bool), one entry per generation. A finished generation's slot is free.")
      .def_property_readonly("slots", &ContinuousBatch::slots)
      .def_property_readonly("active", [](OwnedBatch& b) {
             py::gil_scoped_release release;
             std::lock_guard<std::mutex> lock(b.mutex);
             return b.active();
           })
      .def_property_readonly("decode_steps", &ContinuousBatch::decode_steps,
                             "Batched forward passes run so far (one per step with a generation going on).")
      .def_property_readonly("prefills", &ContinuousBatch::prefills, "Prompts prefilled so far.");
}

}  // namespace nw::bindings
