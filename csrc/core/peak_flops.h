// The CPU's measured fp32 peak: a register-resident FMA loop, for MFU (nanowhale/research/machine.py).
#pragma once

namespace nw {

// fp32 FLOP/s of `threads` OpenMP threads each running independent FMA chains (2 FLOPs per lane per
// FMA) at the widest vector width this build targets, for about `seconds`. Sum over threads.
double measure_peak_flops(int threads, double seconds);

// Lanes per vector register in the loop above (16 with AVX-512, 8 with AVX2, else 4).
int peak_flops_vector_width();

}  // namespace nw
