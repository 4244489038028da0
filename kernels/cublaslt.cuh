// cuBLASLt for the bf16 dense matmuls: one Lt handle and one preallocated workspace per device, and a
// cache of matmul plans (descriptors, layouts and the chosen algorithm) per GEMM shape. Row-major, with
// the argument convention of cpu::gemm and sgemm (kernels/cublas.cuh); errors are thrown with file:line.
#pragma once
#include <cuda_bf16.h>

namespace nw::cuda {

// C (M, N) = alpha op(A) (M, K) op(B) (K, N) + beta C on tensor cores: bf16 A and B, float32
// accumulation and float32 C (leading dimensions of row-major storage). beta is 0 (overwrite C) or 1
// (accumulate into C, as the weight gradients do). Runs on the compute stream; the same shapes, leading
// dimensions and pointer alignments always run the same algorithm, so results are run-to-run identical.
void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const __nv_bfloat16* A, int lda,
               const __nv_bfloat16* B, int ldb, float beta, float* C, int ldc);

}  // namespace nw::cuda
