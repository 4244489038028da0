// nanowhale._C: registers one domain per file.
#include <pybind11/pybind11.h>

#include "bindings/domains.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "nanowhale's C++/CUDA engine";
  nw::bindings::register_core(m);
  nw::bindings::register_model(m);
  nw::bindings::register_optimizer(m);
  nw::bindings::register_data(m);
  nw::bindings::register_distributed(m);
  nw::bindings::register_batching(m);
}
