// Bindings for ModelConfig and Model. Compute runs with the GIL released.
#include <pybind11/stl.h>

#include <climits>

#include "bindings/domains.h"
#include "model/generation.h"
#include "model/model.h"

namespace nw::bindings {

#define NW_MODEL_CONFIG_FIELDS(X)                                                                      \
  X(vocab_size) X(seq_len) X(d_model) X(n_layer) X(n_head) X(n_kv_head) X(head_dim) X(n_dense_layers) \
  X(dense_hidden) X(n_experts) X(top_k) X(expert_hidden) X(n_shared) X(shared_hidden) X(activation)   \
  X(rope_base) X(softcap) X(tie_embeddings) X(window_pattern) X(short_window) X(route_scale)           \
  X(balance_gamma) X(balance_alpha) X(norm_eps)

py::array tensor_to_numpy(const Tensor& t) {
  std::vector<py::ssize_t> shape(t.shape, t.shape + t.ndim);
  if (t.dtype == DType::F64) {
    py::array_t<double> out(shape);
    copy_to_host(out.mutable_data(), t);
    return std::move(out);
  }
  py::array_t<float> out(shape);
  copy_to_host(out.mutable_data(), t);
  return std::move(out);
}

void numpy_to_tensor(const Tensor& t, const py::object& value, const std::string& name) {
  py::array arr = py::array::ensure(value);
  NW_CHECK(arr, name, ": expected a NumPy array");
  const char kind = arr.dtype().kind();
  NW_CHECK(kind == 'f' || kind == 'i' || kind == 'u', name, ": expected a numeric array, got ",
           std::string(py::str(arr.dtype())));
  bool same = arr.ndim() == t.ndim;
  for (int i = 0; same && i < t.ndim; ++i) same = arr.shape(i) == t.shape[i];
  NW_CHECK(same, name, ": expected shape ", t.describe(), ", got ", std::string(py::str(value.attr("shape"))));
  if (t.dtype == DType::F64) {
    py::array_t<double, py::array::c_style | py::array::forcecast> c(arr);
    copy_from_host(t, c.data());
  } else {
    py::array_t<float, py::array::c_style | py::array::forcecast> c(arr);
    copy_from_host(t, c.data());
  }
}

// Sampling settings from Python numbers, range-checked (ValueError) before anything runs.
SamplingParams sampling_args(const py::object& temperature, const py::object& top_k, const py::object& top_p,
                             const py::object& seed) {
  SamplingParams sp{float_arg(temperature, "temperature"), int_arg(top_k, "top_k", 0, INT_MAX),
                    float_arg(top_p, "top_p"), seed_arg(seed, "seed")};
  sp.validate();
  return sp;
}

// Token ids from a Python sequence of ints.
std::vector<int32_t> token_list(const py::object& ids, const char* what) {
  std::vector<int32_t> out;
  for (const py::handle& id : py::iter(ids)) out.push_back(int_arg(id, what, 0, INT_MAX));
  return out;
}

namespace {

py::dict config_to_dict(const ModelConfig& c) {
  py::dict d;
#define X(f) d[#f] = c.f;
  NW_MODEL_CONFIG_FIELDS(X)
#undef X
  return d;
}

void config_update(ModelConfig& c, const py::dict& kw) {
  for (auto item : kw) {
    const std::string key = py::str(item.first);
    bool known = false;
#define X(f)                                                                                          \
  if (key == #f) {                                                                                    \
    known = true;                                                                                     \
    try {                                                                                             \
      c.f = item.second.cast<decltype(c.f)>();                                                        \
    } catch (const py::cast_error&) {                                                                 \
      NW_CHECK(false, "ModelConfig.", key, " has the wrong type: ", std::string(py::repr(item.second))); \
    }                                                                                                 \
  }
    NW_MODEL_CONFIG_FIELDS(X)
#undef X
    NW_CHECK(known, "ModelConfig has no field '", key, "'");
  }
}

// Tokens (B, T) and targets (B, T) as int32, with matching shapes.
std::pair<py::array_t<int32_t>, py::array_t<int32_t>> batch_arrays(const py::object& tokens, const py::object& targets) {
  auto tok = as_int32(tokens, "tokens", 2);
  auto tgt = as_int32(targets, "targets", 2);
  NW_CHECK(tok.shape(0) == tgt.shape(0) && tok.shape(1) == tgt.shape(1), "tokens and targets must have the same shape, got (",
           tok.shape(0), ", ", tok.shape(1), ") and (", tgt.shape(0), ", ", tgt.shape(1), ")");
  return {tok, tgt};
}

// A Generation that holds a reference to its Python Model, so the model outlives it. (Not py::keep_alive<0, 1>:
// pybind11 3.x runs that policy on a call whose arguments failed to convert, with the "try the next overload"
// sentinel as the result, and dereferences it: any out-of-range argument then crashed the process.)
struct OwnedGeneration : Generation {
  py::object owner;
  OwnedGeneration(py::object model_obj, Model& m, const int32_t* prompt, int B, int Tp, int max_new,
                  const SamplingParams& p, std::vector<int32_t> stops)
      : Generation(m, prompt, B, Tp, max_new, p, std::move(stops)), owner(std::move(model_obj)) {}
};

const char* kind_name(ParamKind k) {
  switch (k) {
    case ParamKind::Embedding: return "embedding";
    case ParamKind::Head: return "head";
    case ParamKind::Router: return "router";
    case ParamKind::Scalar: return "scalar";
    case ParamKind::Matrix: return "matrix";
  }
  return "?";
}

}  // namespace

void register_model(py::module_& m) {
  py::class_<ModelConfig> cfg(m, "ModelConfig", "Hyperparameters of the nanowhale transformer (DESIGN.md §3).");
  cfg.def(py::init([](const py::kwargs& kw) {
            ModelConfig c;
            config_update(c, kw);
            return c;
          }))
      .def_static("preset", &ModelConfig::preset, py::arg("name"), "'tiny', 'small', 'base' or 'nanowhale-100m' (the scale ladder)")
      .def_static("from_dict", [](const py::dict& d) {
            ModelConfig c;
            config_update(c, d);
            return c;
          })
      .def("replace", [](const ModelConfig& c, const py::kwargs& kw) {
            ModelConfig out = c;
            config_update(out, kw);
            return out;
          }, "A copy with some fields changed.")
      .def("to_dict", &config_to_dict)
      .def("validate", &ModelConfig::validate)
      .def("num_params", &ModelConfig::num_params)
      .def("num_active_params", &ModelConfig::num_active_params)
      .def("flops_per_token", &ModelConfig::flops_per_token)
      .def("__eq__", [](const ModelConfig& a, const ModelConfig& b) { return config_to_dict(a).equal(config_to_dict(b)); })
      .def("__repr__", [](const ModelConfig& c) {
        std::string s = "ModelConfig(";
        bool first = true;
        for (auto item : config_to_dict(c)) {
          s += (first ? "" : ", ") + std::string(py::str(item.first)) + "=" + std::string(py::repr(item.second));
          first = false;
        }
        return s + ")";
      });
#define X(f) cfg.def_readwrite(#f, &ModelConfig::f);
  NW_MODEL_CONFIG_FIELDS(X)
#undef X

  py::class_<KVCache>(m, "KVCache", "Keys and values of every layer for incremental decoding (one batch size).")
      .def_property_readonly("length", &KVCache::length, "Positions cached so far.")
      .def_property_readonly("capacity", &KVCache::capacity)
      .def_property_readonly("batch", &KVCache::batch)
      .def("reset", &KVCache::reset);

  py::class_<OwnedGeneration>(m, "Generation", "A generation in progress (Model.start_generation); step(n) yields tokens.")
      .def("step",
           [](OwnedGeneration& g, const py::object& n_arg) {
             const int n = int_arg(n_arg, "step n", 1, 1 << 20);
             std::vector<int32_t> buf(int64_t(g.batch()) * n);
             int cols = 0;
             {
               py::gil_scoped_release release;
               std::lock_guard<std::mutex> lock(g.model().compute_mutex());
               cols = g.step(n, buf.data());
             }
             py::array_t<int32_t> out({g.batch(), cols});
             for (int b = 0; b < g.batch(); ++b)
               std::copy_n(buf.data() + int64_t(b) * n, cols, out.mutable_data() + int64_t(b) * cols);
             return out;
           },
           py::arg("n") = 1, "Up to n more tokens per row, (B, k) int32 with k <= n; k = 0 once done.")
      .def_property_readonly("done", &Generation::done)
      .def_property_readonly("produced", &Generation::produced, "Tokens generated so far per row.")
      .def_property_readonly("prompt_length", &Generation::prompt_length)
      .def_property_readonly("stopped", [](const OwnedGeneration& g) {
             std::vector<bool> s(g.stopped().begin(), g.stopped().end());
             return s;
           }, "Per row: whether it has produced a stop token.");

  py::class_<Model>(m, "Model", "The nanowhale MoE transformer: parameters, forward and backward.")
      .def(py::init([](const ModelConfig& c, const py::object& seed, const std::string& device, const std::string& dtype) {
             return std::make_unique<Model>(c, seed_arg(seed, "seed"), parse_device(device), parse_dtype(dtype));
           }),
           py::arg("config"), py::arg("seed") = 0, py::arg("device") = "cpu", py::arg("dtype") = "float32")
      // A copy: the model runs (and its CUDA graphs replay) with the configuration it was made with, and an
      // attribute written through a reference would change it behind them (or its shapes behind its buffers).
      .def_property_readonly("config", [](const Model& m) { return m.config(); },
                             "The model's configuration (a copy: it is fixed at construction).")
      .def_property_readonly("device", [](const Model& m) { return device_name(m.device()); })
      .def_property_readonly("dtype", [](const Model& m) { return dtype_name(m.dtype()); })
      .def_property(
          "precision", [](const Model& m) { return precision_name(m.precision()); },
          [](Model& m, const std::string& p) {
            std::lock_guard<std::mutex> lock(m.compute_mutex());
            m.set_precision(parse_precision(p));
          },
          "Matmul precision of later forward/backward calls: 'fp32' (reference) or 'bf16' (bf16 operands, "
          "float32 accumulation; emulated by rounding on the CPU). Weights stay float32.")
      .def_property(
          "cuda_graphs", &Model::cuda_graphs,
          [](Model& m, bool on) {
            std::lock_guard<std::mutex> lock(m.compute_mutex());
            m.set_cuda_graphs(on);
          },
          "Replay forward_backward's device work and the Optimizer's update as CUDA graphs once their shapes "
          "settle (first run eager, second captured, then replayed): the same results with one launch instead "
          "of thousands. Off by default (train.cuda_graph turns it on on a GPU); no effect on the CPU.")
      .def(
          "cuda_graph_stats", [](const Model& m) { return graph_stats(m.train_graph()); },
          "forward_backward's CUDA graph: {'captures', 'replays' (graph launches), 'failure' (why a capture "
          "failed, after which it runs eagerly; '' if none)}.")
      .def("init_weights", &Model::init_weights, py::arg("seed"), py::call_guard<py::gil_scoped_release>())
      .def("forward_backward",
           [](Model& m, const py::object& tokens, const py::object& targets, const py::object& weights,
              float grad_scale, bool defer_loss) -> py::object {
             auto [tok, tgt] = batch_arrays(tokens, targets);
             const int B = int(tok.shape(0)), T = int(tok.shape(1));
             py::array_t<float, py::array::c_style | py::array::forcecast> w;
             if (!weights.is_none()) {
               py::array arr = py::array::ensure(weights);
               NW_CHECK(arr && (arr.dtype().kind() == 'f' || arr.dtype().kind() == 'i' || arr.dtype().kind() == 'u'),
                        "weights must be a NumPy float array");
               NW_CHECK(arr.ndim() == 2 && arr.shape(0) == B && arr.shape(1) == T, "weights must have the shape of "
                        "tokens (", B, ", ", T, "), got ", std::string(py::str(weights.attr("shape"))));
               w = py::array_t<float, py::array::c_style | py::array::forcecast>(arr);
             }
             const float* wp = weights.is_none() ? nullptr : w.data();
             double loss;
             {
               py::gil_scoped_release release;
               std::lock_guard<std::mutex> lock(m.compute_mutex());
               loss = m.forward_backward(tok.data(), tgt.data(), B, T, grad_scale, wp, defer_loss).loss;
             }
             return defer_loss ? py::object(py::none()) : py::object(py::float_(loss));
           },
           py::arg("tokens"), py::arg("targets"), py::arg("weights") = py::none(), py::arg("grad_scale") = 1.0f,
           py::arg("defer_loss") = false,
           "Adds grad_scale * d(loss)/d(params) to the gradients; returns the loss: the mean cross-entropy, or "
           "with weights (B, T) (any sign) sum_t weights[t] * CE_t over targets that are not -1. With "
           "defer_loss=True it returns None without waiting for the device: the loss and the balance loss are "
           "added to sums on the device that take_loss_sums() reads (one read for a whole step's micro-batches). "
           "A call without defer_loss while such sums wait raises ValueError.")
      .def("take_loss_sums",
           [](Model& m) {
             LossSums s;
             {
               py::gil_scoped_release release;
               std::lock_guard<std::mutex> lock(m.compute_mutex());
               s = m.take_loss_sums();
             }
             return py::make_tuple(s.loss, s.balance);
           },
           "(loss, balance_loss): the sums of the losses of the deferred forward_backward calls since the last "
           "take (each the value the call would have returned) and of their balance losses, in one read from "
           "the device; sets both sums back to zero.")
      .def("forward",
           [](Model& m, const py::object& tokens, const py::object& targets) {
             auto [tok, tgt] = batch_arrays(tokens, targets);
             const int B = int(tok.shape(0)), T = int(tok.shape(1));
             py::gil_scoped_release release;
             std::lock_guard<std::mutex> lock(m.compute_mutex());
             return m.forward(tok.data(), tgt.data(), B, T).loss;
           },
           py::arg("tokens"), py::arg("targets"), "Mean cross-entropy without gradients.")
      .def("token_losses",
           [](Model& m, const py::object& tokens, const py::object& targets) {
             auto [tok, tgt] = batch_arrays(tokens, targets);
             const int B = int(tok.shape(0)), T = int(tok.shape(1));
             py::array_t<float> out({B, T});
             float* dst = out.mutable_data();
             {
               py::gil_scoped_release release;
               std::lock_guard<std::mutex> lock(m.compute_mutex());
               m.forward(tok.data(), tgt.data(), B, T, dst);
             }
             return out;
           },
           py::arg("tokens"), py::arg("targets"), "Per-position loss in nats, (B, T); 0 where the target is -1.")
      .def("logits",
           [](Model& m, const py::object& tokens) {
             auto tok = as_int32(tokens, "tokens", 2);
             const int B = int(tok.shape(0)), T = int(tok.shape(1));
             py::array_t<float> out({B, T, m.config().vocab_size});
             float* dst = out.mutable_data();
             {
               py::gil_scoped_release release;
               std::lock_guard<std::mutex> lock(m.compute_mutex());
               m.logits(tok.data(), B, T, dst);
             }
             return out;
           },
           py::arg("tokens"), "Soft-capped logits, (B, T, V) float32.")
      .def("route",
           [](Model& m, const py::object& tokens) {
             auto tok = as_int32(tokens, "tokens", 2);
             const ModelConfig& c = m.config();
             const int B = int(tok.shape(0)), T = int(tok.shape(1));
             int M = 0;
             for (int l = 0; l < c.n_layer; ++l) M += c.is_moe_layer(l);
             py::array_t<int32_t> experts({M, B, T, c.top_k});
             py::array_t<float> scores({M, B, T, c.n_experts});
             int32_t* e = experts.mutable_data();
             float* s = scores.mutable_data();
             {
               py::gil_scoped_release release;
               m.route(tok.data(), B, T, e, s);
             }
             return py::make_tuple(experts, scores);
           },
           py::arg("tokens"),
           "How tokens (B, T) are routed, without routing counts: (experts (M, B, T, top_k) int32 in selection "
           "order, router scores sigmoid(x W_r) (M, B, T, n_experts) float32), M = number of MoE layers.")
      .def("new_kv_cache", &Model::new_kv_cache, py::arg("batch") = 1)
      .def("decode",
           [](Model& m, const py::object& tokens, KVCache& cache) {
             auto tok = as_int32(tokens, "tokens", 2);
             const int B = int(tok.shape(0)), T = int(tok.shape(1));
             py::array_t<float> out({B, T, m.config().vocab_size});
             float* dst = out.mutable_data();
             {
               py::gil_scoped_release release;
               std::lock_guard<std::mutex> lock(m.compute_mutex());
               m.decode(tok.data(), B, T, cache, dst);
             }
             return out;
           },
           py::arg("tokens"), py::arg("cache"),
           "Runs tokens (B, T) as the next positions of the cached sequences; returns soft-capped logits (B, T, V).")
      .def("generate",
           [](Model& m, const py::object& prompt, const py::object& max_new_tokens, const py::object& temperature,
              const py::object& top_k, const py::object& top_p, const py::object& seed, const py::object& stop_token) {
             auto p = as_int32(prompt, "prompt", 2);
             const int B = int(p.shape(0)), Tp = int(p.shape(1));
             const SamplingParams sp = sampling_args(temperature, top_k, top_p, seed);
             const int max_new = int_arg(max_new_tokens, "max_new_tokens", INT_MIN, INT_MAX);
             const int stop = stop_token.is_none() ? -1 : int_arg(stop_token, "stop_token", 0, INT_MAX);
             // Checked before the output is allocated (Tp + max_new_tokens could overflow an int).
             NW_CHECK(max_new >= 0 && int64_t(Tp) + max_new <= m.config().seq_len, "prompt (", Tp,
                      ") + max_new_tokens (", max_new, ") must be at most seq_len ", m.config().seq_len,
                      ", with max_new_tokens >= 0");
             py::array_t<int32_t> out({B, Tp + max_new});
             int32_t* dst = out.mutable_data();
             int length = 0;
             {
               py::gil_scoped_release release;
               std::lock_guard<std::mutex> lock(m.compute_mutex());
               length = m.generate(p.data(), B, Tp, max_new, sp, stop, dst);
             }
             return out[py::make_tuple(py::slice(0, B, 1), py::slice(0, length, 1))].cast<py::array>();
           },
           py::arg("prompt"), py::arg("max_new_tokens"), py::arg("temperature") = 1.0f, py::arg("top_k") = 0,
           py::arg("top_p") = 1.0f, py::arg("seed") = 0, py::arg("stop_token") = py::none(),
           "Prompt (B, Tp) -> (B, Tp + n) int32 with a KV cache. temperature 0 is greedy; stops early once every row "
           "has produced stop_token.")
      .def("start_generation",
           [](const py::object& self, const py::object& prompt, const py::object& max_new_tokens,
              const py::object& temperature, const py::object& top_k, const py::object& top_p, const py::object& seed,
              const py::object& stop_tokens) {
             Model& m = self.cast<Model&>();
             auto p = as_int32(prompt, "prompt", 2);
             const SamplingParams sp = sampling_args(temperature, top_k, top_p, seed);
             const int max_new = int_arg(max_new_tokens, "max_new_tokens", INT_MIN, INT_MAX);
             return std::make_unique<OwnedGeneration>(self, m, p.data(), int(p.shape(0)), int(p.shape(1)), max_new,
                                                      sp, token_list(stop_tokens, "stop_tokens"));
           },
           py::arg("prompt"), py::arg("max_new_tokens"), py::arg("temperature") = 1.0f, py::arg("top_k") = 0,
           py::arg("top_p") = 1.0f, py::arg("seed") = 0, py::arg("stop_tokens") = py::list(),
           "A Generation of prompt (B, Tp) to advance with step(n): the same tokens as generate() with the same "
           "arguments, delivered as they come (streaming). A row stops at its first stop token.")
      .def_property_readonly("last_loss", [](const Model& m) { return m.last_loss().loss; })
      .def_property_readonly("last_balance_loss", [](const Model& m) { return m.last_loss().balance_loss; },
                             "Sum over MoE layers of the balance loss of the latest forward (not in the returned loss; "
                             "NaN after a deferred forward_backward: see take_loss_sums).")
      .def("zero_grad", &Model::zero_grad)
      .def("update_balance_bias", py::overload_cast<float>(&Model::update_balance_bias), py::arg("gamma"),
           "b_i += gamma * sign(mean - count_i) from the routing counts since the last update.")
      .def("routing_stats",
           [](const Model& m) {
             py::list out;
             for (const RoutingStats& s : m.routing_stats()) {
               py::dict d;
               d["layer"] = s.layer;
               d["tokens_per_expert"] = s.tokens_per_expert;
               d["max_violation"] = s.max_violation;
               d["dead_experts"] = s.dead_experts;
               d["bias"] = s.bias;
               out.append(d);
             }
             return out;
           },
           "Per MoE layer: tokens per expert (this step's, else the last step's), max-violation, dead experts, bias.")
      .def("parameter_names",
           [](const Model& m) {
             std::vector<std::string> names;
             for (int i = 0; i < m.params().layout().size(); ++i) names.push_back(m.params().layout()[i].name);
             return names;
           })
      .def("parameter_kind", [](const Model& m, const std::string& name) { return kind_name(m.kind(m.params().layout().index(name))); })
      .def("get_param", [](const Model& m, const std::string& name) { return tensor_to_numpy(m.params().view(m.params().layout().index(name))); })
      .def("set_param", [](Model& m, const std::string& name, const py::object& v) {
             numpy_to_tensor(m.params().view(m.params().layout().index(name)), v, name);
           })
      .def("get_grad", [](const Model& m, const std::string& name) { return tensor_to_numpy(m.grads().view(m.grads().layout().index(name))); })
      .def("buffer_names",
           [](const Model& m) {
             std::vector<std::string> names;
             for (int i = 0; i < m.buffers().layout().size(); ++i) names.push_back(m.buffers().layout()[i].name);
             return names;
           })
      .def("get_buffer", [](const Model& m, const std::string& name) { return tensor_to_numpy(m.buffers().view(m.buffers().layout().index(name))); })
      .def("set_buffer", [](Model& m, const std::string& name, const py::object& v) {
             numpy_to_tensor(m.buffers().view(m.buffers().layout().index(name)), v, name);
           })
      .def("num_params", [](const Model& m) { return m.config().num_params(); })
      .def("num_active_params", [](const Model& m) { return m.config().num_active_params(); });
}

}  // namespace nw::bindings
