// cuBLAS for the CUDA backend: one lazily created handle per device, errors thrown with file:line
// (never exit), and row-major GEMM wrappers with the same argument convention as cpu::gemm
// (C (M, N) = alpha op(A) (M, K) op(B) (K, N) + beta C, leading dimensions of row-major storage).
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include "core/error.h"

namespace nw::cuda {

const char* cublas_status_name(cublasStatus_t s);

#define NW_CUBLAS_CHECK(call)                                                                        \
  do {                                                                                               \
    cublasStatus_t st_ = (call);                                                                     \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                \
      throw ::nw::Error(::nw::detail::concat("cuBLAS error ", ::nw::cuda::cublas_status_name(st_),   \
                                             " in ", #call, " [", __FILE__, ":", __LINE__, "]"));    \
  } while (0)

// The handle for the current device (created on first use, on the compute stream, plain fp32 math:
// no TF32, so results match the CPU oracle to float32 accuracy).
cublasHandle_t cublas_handle();

// Row-major single-precision GEMM (float32 throughout).
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
           int ldb, float beta, float* C, int ldc);
// The same over `batch` problems whose A, B, C start stride_a, stride_b, stride_c elements apart.
void sgemm_strided_batched(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                           long long stride_a, const float* B, int ldb, long long stride_b, float beta, float* C,
                           int ldc, long long stride_c, int batch);
// The batched GEMM on tensor cores: bf16 A and B, float32 accumulation and float32 C (Muon batches a
// parameter's matrices with it; the dense layers use cuBLASLt, kernels/cublaslt.cuh).
void gemm_bf16_strided_batched(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const __nv_bfloat16* A,
                               int lda, long long stride_a, const __nv_bfloat16* B, int ldb, long long stride_b,
                               float beta, float* C, int ldc, long long stride_c, int batch);

}  // namespace nw::cuda
