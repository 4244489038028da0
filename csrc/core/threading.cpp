#include "core/threading.h"

#include <omp.h>

#include "core/error.h"
#include "cpu/blas.h"

namespace nw {

void set_num_threads(int n) {
  NW_CHECK(n >= 1, "number of threads must be >= 1, got ", n);
  omp_set_num_threads(n);
  cpu::blas_set_num_threads(n);
}

int get_num_threads() { return omp_get_max_threads(); }

}  // namespace nw
