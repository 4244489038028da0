#include "core/threading.h"

#include <omp.h>

#include "core/error.h"
#include "cpu/blas.h"

namespace nw {

void set_num_threads(int n) {
  NW_CHECK(n >= 1, "number of threads must be >= 1, got ", n);
  omp_set_num_threads(n);
  cpu::blas_set_num_threads(n);  // keeps OpenBLAS single-threaded; gemm splits work over OpenMP
}

int get_num_threads() { return omp_get_max_threads(); }

namespace {
// At load time: OpenBLAS's own pool must not compete with OpenMP's for the cores.
const bool kBlasSingleThreaded = (cpu::blas_set_num_threads(1), true);
}  // namespace

}  // namespace nw
