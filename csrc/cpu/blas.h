// Row-major GEMM on the CPU through OpenBLAS (scipy-openblas32, whose symbols carry a scipy_ prefix).
// C (M, N) = alpha * op(A) (M, K) · op(B) (K, N) + beta * C. Templated so tests can run in float64.
#pragma once

namespace nw::cpu {

template <typename T>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda, const T* B,
          int ldb, T beta, T* C, int ldc);

// Symmetric rank-k update C (M, M) = alpha * A A^T + beta * C with A (M, K); both triangles of C are
// written (BLAS computes the upper one, the lower is mirrored from it).
template <typename T>
void syrk(int M, int K, T alpha, const T* A, int lda, T beta, T* C, int ldc);

void blas_set_num_threads(int n);

}  // namespace nw::cpu
