// CUDA grouped expert matmul that reads the per-expert row offsets from device memory, so the host
// never waits for the routing counts. One tiled GEMM (64x64 output tiles, 16-deep K steps; fp32: 4x4
// outputs per thread, bf16: tensor cores) serves all three products:
// - forward  y[rows_e]  = x[rows_e] W_e^T      and  dx[rows_e] = dy[rows_e] W_e:
//   grid.x enumerates (expert, row tile) pairs. There are at most R/64 + E of them; block x walks the
//   offsets to find its expert and tile, and blocks past the last pair exit at once.
// - dW_e += dy[rows_e]^T x[rows_e]: grid (in tiles, out tiles, E); each block reduces over its
//   expert's rows in row order.
// Every output element is summed by one thread (bf16: one warp) in a fixed order: deterministic, no atomics.
// bf16 precision runs the same tiling on tensor cores (sm_80+): operands are converted to bf16 (round
// to nearest even, the CPU emulation's values) as they are staged in shared memory, and each warp's
// 16x16x16 MMAs accumulate in float32 in K order, so results repeat bit for bit.
#include <cuda_bf16.h>
#include <mma.h>

#include "kernels/common.cuh"
#include "ops/grouped_linear.h"

namespace nw::cuda {

namespace {
constexpr int TM = 64, TN = 64, TK = 16, kThreads = 256;

// C (M, N) = op(A) (M, K) op(B) (K, N) (+ C when accumulate) for the tile at (m0, n0). Row-major:
// op(A)(m, k) = TA ? A[k*lda + m] : A[m*lda + k]; op(B)(k, n) = TB ? B[n*ldb + k] : B[k*ldb + n].
template <bool TA, bool TB>
__device__ void gemm_tile(int M, int N, int K, const float* __restrict__ A, int lda, const float* __restrict__ B,
                          int ldb, float* __restrict__ C, int ldc, bool accumulate, int m0, int n0) {
  __shared__ float As[TK][TM + 1];
  __shared__ float Bs[TK][TN + 1];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += TK) {
    for (int i = tid; i < TM * TK; i += kThreads) {
      const int m = TA ? i % TM : i / TK, k = TA ? i / TM : i % TK;  // consecutive threads read consecutive memory
      const int gm = m0 + m, gk = k0 + k;
      As[k][m] = (gm < M && gk < K) ? (TA ? A[int64_t(gk) * lda + gm] : A[int64_t(gm) * lda + gk]) : 0.f;
    }
    for (int i = tid; i < TN * TK; i += kThreads) {
      const int n = TB ? i / TK : i % TN, k = TB ? i % TK : i / TN;
      const int gn = n0 + n, gk = k0 + k;
      Bs[k][n] = (gn < N && gk < K) ? (TB ? B[int64_t(gn) * ldb + gk] : B[int64_t(gk) * ldb + gn]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < TK; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[k][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[k][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int gm = m0 + ty + 16 * i, gn = n0 + tx + 16 * j;
      if (gm < M && gn < N) {
        float* c = C + int64_t(gm) * ldc + gn;
        *c = accumulate ? *c + acc[i][j] : acc[i][j];
      }
    }
}

// The same tile on tensor cores: each of the 8 warps owns two 16x16 accumulator fragments (fragment
// row warp/2, columns 2*(warp%2) and 2*(warp%2)+1 of the 4x4 fragments of the 64x64 tile).
template <bool TA, bool TB>
__device__ void gemm_tile_bf16(int M, int N, int K, const float* __restrict__ A, int lda,
                               const float* __restrict__ B, int ldb, float* __restrict__ C, int ldc, bool accumulate,
                               int m0, int n0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  constexpr int LDA = TK + 8, LDB = TN + 8, LDC = TN + 4;  // padded rows: multiples of 8 (bf16) / 4 (fp32)
  __shared__ __align__(32) __nv_bfloat16 As[TM * LDA];  // (m, k)
  __shared__ __align__(32) __nv_bfloat16 Bs[TK * LDB];  // (k, n)
  __shared__ __align__(32) float Cs[TM * LDC];
  const int tid = threadIdx.x, warp = tid / 32, fm = warp / 2, fn = (warp % 2) * 2;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
  wmma::fill_fragment(acc[0], 0.f);
  wmma::fill_fragment(acc[1], 0.f);
  for (int k0 = 0; k0 < K; k0 += TK) {
    for (int i = tid; i < TM * TK; i += kThreads) {
      const int m = TA ? i % TM : i / TK, k = TA ? i / TM : i % TK;
      const int gm = m0 + m, gk = k0 + k;
      const float v = (gm < M && gk < K) ? (TA ? A[int64_t(gk) * lda + gm] : A[int64_t(gm) * lda + gk]) : 0.f;
      As[m * LDA + k] = __float2bfloat16_rn(v);
    }
    for (int i = tid; i < TN * TK; i += kThreads) {
      const int n = TB ? i / TK : i % TN, k = TB ? i % TK : i / TN;
      const int gn = n0 + n, gk = k0 + k;
      const float v = (gn < N && gk < K) ? (TB ? B[int64_t(gn) * ldb + gk] : B[int64_t(gk) * ldb + gn]) : 0.f;
      Bs[k * LDB + n] = __float2bfloat16_rn(v);
    }
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
    wmma::load_matrix_sync(a, As + fm * 16 * LDA, LDA);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
      wmma::load_matrix_sync(b, Bs + (fn + j) * 16, LDB);
      wmma::mma_sync(acc[j], a, b, acc[j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < 2; ++j)
    wmma::store_matrix_sync(Cs + fm * 16 * LDC + (fn + j) * 16, acc[j], LDC, wmma::mem_row_major);
  __syncthreads();
  for (int i = tid; i < TM * TN; i += kThreads) {
    const int m = i / TN, n = i % TN, gm = m0 + m, gn = n0 + n;
    if (gm < M && gn < N) {
      float* c = C + int64_t(gm) * ldc + gn;
      *c = accumulate ? *c + Cs[m * LDC + n] : Cs[m * LDC + n];
    }
  }
#else
  __trap();  // bf16 tensor cores need sm_80 or newer (the build targets sm_80 and sm_90)
#endif
}

template <bool TA, bool TB, bool BF16>
__device__ void tile(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                     bool accumulate, int m0, int n0) {
  if (BF16) gemm_tile_bf16<TA, TB>(M, N, K, A, lda, B, ldb, C, ldc, accumulate, m0, n0);
  else gemm_tile<TA, TB>(M, N, K, A, lda, B, ldb, C, ldc, accumulate, m0, n0);
}

// Finds the expert e, its first row, its row count and the tile's first row m0 (relative to the
// expert) of row-tile pair `pair`; false past the last pair.
__device__ bool find_row_tile(const int32_t* offsets, int E, int pair, int& e, int& row0, int& rows, int& m0) {
  int start = 0;
  for (e = 0; e < E; ++e) {
    const int n = offsets[e + 1] - offsets[e], tiles = (n + TM - 1) / TM;
    if (pair < start + tiles) {
      row0 = offsets[e];
      rows = n;
      m0 = (pair - start) * TM;
      return true;
    }
    start += tiles;
  }
  return false;
}

// y (R, out) = x (R, in) . W_e^T per expert.
template <bool BF16>
__global__ void __launch_bounds__(kThreads) grouped_forward_kernel(float* y, const float* x, const float* w,
                                                                   const int32_t* offsets, int E, int out, int in) {
  int e, row0, rows, m0;
  if (!find_row_tile(offsets, E, blockIdx.x, e, row0, rows, m0)) return;
  tile<false, true, BF16>(rows, out, in, x + int64_t(row0) * in, in, w + int64_t(e) * out * in, in,
                         y + int64_t(row0) * out, out, false, m0, blockIdx.y * TN);
}

// dx (R, in) = dy (R, out) . W_e per expert.
template <bool BF16>
__global__ void __launch_bounds__(kThreads) grouped_dx_kernel(float* dx, const float* dy, const float* w,
                                                              const int32_t* offsets, int E, int out, int in) {
  int e, row0, rows, m0;
  if (!find_row_tile(offsets, E, blockIdx.x, e, row0, rows, m0)) return;
  tile<false, false, BF16>(rows, in, out, dy + int64_t(row0) * out, out, w + int64_t(e) * out * in, in,
                          dx + int64_t(row0) * in, in, false, m0, blockIdx.y * TN);
}

// dW_e (out, in) += dy[rows_e]^T (out, rows) . x[rows_e] (rows, in).
template <bool BF16>
__global__ void __launch_bounds__(kThreads) grouped_dw_kernel(float* dw, const float* dy, const float* x,
                                                              const int32_t* offsets, int out, int in) {
  const int e = blockIdx.z, row0 = offsets[e], rows = offsets[e + 1] - row0;
  if (rows == 0) return;  // dW_e += 0
  tile<true, false, BF16>(out, in, rows, dy + int64_t(row0) * out, out, x + int64_t(row0) * in, in,
                         dw + int64_t(e) * out * in, in, true, blockIdx.y * TM, blockIdx.x * TN);
}

// Upper bound on the (expert, row tile) pairs: sum_e ceil(n_e / TM) <= R / TM + E.
unsigned row_tile_pairs(int64_t R, int64_t E) { return static_cast<unsigned>(R / TM + E); }
}  // namespace

void grouped_linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& offsets,
                            Precision p) {
  detail::require_f32("grouped_linear_forward", {&y, &x, &w});
  const int64_t R = x.size(0), E = w.size(0), out = w.size(1), in = w.size(2);
  if (R == 0 || out == 0 || E == 0) return;
  NW_CHECK(R < (int64_t(1) << 31) && out * in < (int64_t(1) << 31), "grouped_linear_forward: sizes exceed int32");
  const dim3 grid(row_tile_pairs(R, E), static_cast<unsigned>((out + TN - 1) / TN));
  auto kernel = p == Precision::BF16 ? grouped_forward_kernel<true> : grouped_forward_kernel<false>;
  kernel<<<grid, kThreads, 0, detail::stream()>>>(y.ptr<float>(), x.ptr<float>(), w.ptr<float>(), offsets.ptr<int32_t>(), int(E), int(out),
                             int(in));
  NW_CUDA_LAUNCH_CHECK();
}

void grouped_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                             const Tensor& offsets, Precision p) {
  detail::require_f32("grouped_linear_backward", {&dx, &dw, &dy, &x, &w});
  const int64_t R = x.size(0), E = w.size(0), out = w.size(1), in = w.size(2);
  if (R == 0 || E == 0 || in == 0) return;
  NW_CHECK(R < (int64_t(1) << 31) && out * in < (int64_t(1) << 31), "grouped_linear_backward: sizes exceed int32");
  const bool bf16 = p == Precision::BF16;
  if (dx.defined()) {
    const dim3 grid(row_tile_pairs(R, E), static_cast<unsigned>((in + TN - 1) / TN));
    auto kernel = bf16 ? grouped_dx_kernel<true> : grouped_dx_kernel<false>;
    kernel<<<grid, kThreads, 0, detail::stream()>>>(dx.ptr<float>(), dy.ptr<float>(), w.ptr<float>(), offsets.ptr<int32_t>(), int(E),
                               int(out), int(in));
    NW_CUDA_LAUNCH_CHECK();
  }
  if (out == 0) return;
  const dim3 grid(static_cast<unsigned>((in + TN - 1) / TN), static_cast<unsigned>((out + TM - 1) / TM),
                  static_cast<unsigned>(E));
  auto kernel = bf16 ? grouped_dw_kernel<true> : grouped_dw_kernel<false>;
  kernel<<<grid, kThreads, 0, detail::stream()>>>(dw.ptr<float>(), dy.ptr<float>(), x.ptr<float>(), offsets.ptr<int32_t>(), int(out),
                             int(in));
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
