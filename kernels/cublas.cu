// The cuBLAS handle and row-major GEMM wrappers. cuBLAS is column-major: a row-major C = op(A) op(B)
// is the column-major C^T = op(B)^T op(A)^T, so the operands are passed swapped (B first) with the
// same transpose flags and M, N exchanged.
#include <mutex>

#include "kernels/cublas.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/stream.cuh"

namespace nw::cuda {

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED (is a CUDA device available?)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED (out of device memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

namespace {
constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;  // what cuBLAS recommends on Hopper
}  // namespace

cublasHandle_t cublas_handle() {
  // Handles live until the process ends: destroying them from a static destructor can run after
  // the CUDA runtime has shut down.
  static std::mutex mu;
  static cublasHandle_t handles[64] = {};
  int dev = 0;
  NW_CUDA_CHECK(cudaGetDevice(&dev));
  NW_CHECK(dev >= 0 && dev < 64, "cublas_handle: device index ", dev, " is out of range");
  std::lock_guard<std::mutex> lock(mu);
  if (!handles[dev]) {
    cublasHandle_t h = nullptr;
    NW_CUBLAS_CHECK(cublasCreate(&h));
    NW_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));  // fp32 FMA, no TF32 down-conversion
    NW_CUBLAS_CHECK(cublasSetStream(h, detail::stream()));
    // A workspace of its own (set after the stream, which resets it): cuBLAS then allocates nothing
    // while a CUDA graph captures its calls.
    void* ws = nullptr;
    NW_CUDA_CHECK(cudaMalloc(&ws, kCublasWorkspaceBytes));
    NW_CUBLAS_CHECK(cublasSetWorkspace(h, ws, kCublasWorkspaceBytes));
    handles[dev] = h;
  }
  return handles[dev];
}

void sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  NW_CUBLAS_CHECK(cublasSgemm(cublas_handle(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M,
                              K, &alpha, B, ldb, A, lda, &beta, C, ldc));
}

void sgemm_strided_batched(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                           long long stride_a, const float* B, int ldb, long long stride_b, float beta, float* C,
                           int ldc, long long stride_c, int batch) {
  if (M == 0 || N == 0 || batch == 0) return;
  NW_CUBLAS_CHECK(cublasSgemmStridedBatched(cublas_handle(), tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                            ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb, stride_b, A,
                                            lda, stride_a, &beta, C, ldc, stride_c, batch));
}

void gemm_bf16_strided_batched(bool ta, bool tb, int M, int N, int K, float alpha, const __nv_bfloat16* A, int lda,
                               long long stride_a, const __nv_bfloat16* B, int ldb, long long stride_b, float beta,
                               float* C, int ldc, long long stride_c, int batch) {
  if (M == 0 || N == 0 || batch == 0) return;
  NW_CUBLAS_CHECK(cublasGemmStridedBatchedEx(cublas_handle(), tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                             ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, CUDA_R_16BF, ldb,
                                             stride_b, A, CUDA_R_16BF, lda, stride_a, &beta, C, CUDA_R_32F, ldc,
                                             stride_c, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace nw::cuda
