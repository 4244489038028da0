#include "cpu/blas.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

namespace nw::cpu {

namespace {
void gemm_call(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
               float beta, float* C, int ldc) {
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
                    lda, B, ldb, beta, C, ldc);
}
void gemm_call(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda, const double* B, int ldb,
               double beta, double* C, int ldc) {
  scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
                    lda, B, ldb, beta, C, ldc);
}
}  // namespace

// OpenBLAS runs single-threaded (see blas_set_num_threads); large products are split into row
// blocks of C across the OpenMP team instead. One thread pool on the machine means no two pools
// spin against each other on the cores. The blocks depend only on the shape, never on the thread
// count: OpenBLAS's kernels may round differently for a different number of rows (seen with the
// Haswell kernels on AMD Zen), so a thread-dependent split would make the bits depend on threads.
template <typename T>
void gemm(bool ta, bool tb, int M, int N, int K, T alpha, const T* A, int lda, const T* B, int ldb, T beta, T* C,
          int ldc) {
  if (M == 0 || N == 0) return;
  constexpr int kMaxBlocks = 8, kMinRows = 64;
  const double work = double(M) * N * K;
  if (work < (1 << 20) || M < 2 * kMinRows) {
    gemm_call(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Row blocks of C, a multiple of 16 rows so the BLAS kernels see the same tiling.
  const int block = std::max(kMinRows, (M / kMaxBlocks + 15) / 16 * 16);
  const int blocks = (M + block - 1) / block;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
  for (int b = 0; b < blocks; ++b) {
    const int m0 = b * block, rows = std::min(block, M - m0);
    const T* a = ta ? A + m0 : A + int64_t(m0) * lda;  // op(A) rows m0.. are A's columns m0.. when transposed
    gemm_call(ta, tb, rows, N, K, alpha, a, lda, B, ldb, beta, C + int64_t(m0) * ldc, ldc);
  }
}

template void gemm<float>(bool, bool, int, int, int, float, const float*, int, const float*, int, float, float*, int);
template void gemm<double>(bool, bool, int, int, int, double, const double*, int, const double*, int, double, double*,
                           int);

namespace {
void syrk_call(int M, int K, float alpha, const float* A, int lda, float beta, float* C, int ldc) {
  scipy_cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, M, K, alpha, A, lda, beta, C, ldc);
}
void syrk_call(int M, int K, double alpha, const double* A, int lda, double beta, double* C, int ldc) {
  scipy_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, M, K, alpha, A, lda, beta, C, ldc);
}
}  // namespace

template <typename T>
void syrk(int M, int K, T alpha, const T* A, int lda, T beta, T* C, int ldc) {
  if (M == 0) return;
  syrk_call(M, K, alpha, A, lda, beta, C, ldc);
  for (int i = 1; i < M; ++i)
    for (int j = 0; j < i; ++j) C[int64_t(i) * ldc + j] = C[int64_t(j) * ldc + i];
}

template void syrk<float>(int, int, float, const float*, int, float, float*, int);
template void syrk<double>(int, int, double, const double*, int, double, double*, int);

void blas_set_num_threads(int) { scipy_openblas_set_num_threads(1); }

}  // namespace nw::cpu
