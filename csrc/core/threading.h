// Thread control for the CPU backend: every parallel loop (and every large GEMM) runs on the one
// OpenMP team; OpenBLAS itself stays single-threaded.
#pragma once

namespace nw {

void set_num_threads(int n);
int get_num_threads();

}  // namespace nw
