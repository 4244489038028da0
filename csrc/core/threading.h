// Thread control for the CPU backend: OpenMP loops and the OpenBLAS pool use the same count.
#pragma once

namespace nw {

void set_num_threads(int n);
int get_num_threads();

}  // namespace nw
