// CUDA grouped expert matmul (fp32) that reads the per-expert row offsets from device memory, so the
// host never waits for the routing counts. One tiled GEMM kernel (64x64 output tiles, 16-deep K
// steps, 4x4 outputs per thread) serves all three products:
// - forward  y[rows_e]  = x[rows_e] W_e^T      and  dx[rows_e] = dy[rows_e] W_e:
//   grid.x enumerates (expert, row tile) pairs. There are at most R/64 + E of them; block x walks the
//   offsets to find its expert and tile, and blocks past the last pair exit at once.
// - dW_e += dy[rows_e]^T x[rows_e]: grid (in tiles, out tiles, E); each block reduces over its
//   expert's rows in row order.
// Every output element is summed by one thread in a fixed order: deterministic, no atomics.
// bf16 precision: the kernel reads operands rounded to bf16 (float32 copies) and accumulates in float32,
// the arithmetic of the CPU emulation; a tensor-core grouped GEMM is later work.
#include "kernels/bf16.cuh"
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
__global__ void __launch_bounds__(kThreads) grouped_forward_kernel(float* y, const float* x, const float* w,
                                                                   const int32_t* offsets, int E, int out, int in) {
  int e, row0, rows, m0;
  if (!find_row_tile(offsets, E, blockIdx.x, e, row0, rows, m0)) return;
  gemm_tile<false, true>(rows, out, in, x + int64_t(row0) * in, in, w + int64_t(e) * out * in, in,
                         y + int64_t(row0) * out, out, false, m0, blockIdx.y * TN);
}

// dx (R, in) = dy (R, out) . W_e per expert.
__global__ void __launch_bounds__(kThreads) grouped_dx_kernel(float* dx, const float* dy, const float* w,
                                                              const int32_t* offsets, int E, int out, int in) {
  int e, row0, rows, m0;
  if (!find_row_tile(offsets, E, blockIdx.x, e, row0, rows, m0)) return;
  gemm_tile<false, false>(rows, in, out, dy + int64_t(row0) * out, out, w + int64_t(e) * out * in, in,
                          dx + int64_t(row0) * in, in, false, m0, blockIdx.y * TN);
}

// dW_e (out, in) += dy[rows_e]^T (out, rows) . x[rows_e] (rows, in).
__global__ void __launch_bounds__(kThreads) grouped_dw_kernel(float* dw, const float* dy, const float* x,
                                                              const int32_t* offsets, int out, int in) {
  const int e = blockIdx.z, row0 = offsets[e], rows = offsets[e + 1] - row0;
  if (rows == 0) return;  // dW_e += 0
  gemm_tile<true, false>(out, in, rows, dy + int64_t(row0) * out, out, x + int64_t(row0) * in, in,
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
  const Bf16RoundedOperand xr(x, p), wr(w, p);
  grouped_forward_kernel<<<grid, kThreads>>>(y.ptr<float>(), xr.t().ptr<float>(), wr.t().ptr<float>(),
                                             offsets.ptr<int32_t>(), int(E), int(out), int(in));
  NW_CUDA_LAUNCH_CHECK();
}

void grouped_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                             const Tensor& offsets, Precision p) {
  detail::require_f32("grouped_linear_backward", {&dx, &dw, &dy, &x, &w});
  const int64_t R = x.size(0), E = w.size(0), out = w.size(1), in = w.size(2);
  if (R == 0 || E == 0 || in == 0) return;
  NW_CHECK(R < (int64_t(1) << 31) && out * in < (int64_t(1) << 31), "grouped_linear_backward: sizes exceed int32");
  const Bf16RoundedOperand dyr(dy, p);
  if (dx.defined()) {
    const Bf16RoundedOperand wr(w, p);
    const dim3 grid(row_tile_pairs(R, E), static_cast<unsigned>((in + TN - 1) / TN));
    grouped_dx_kernel<<<grid, kThreads>>>(dx.ptr<float>(), dyr.t().ptr<float>(), wr.t().ptr<float>(),
                                          offsets.ptr<int32_t>(), int(E), int(out), int(in));
    NW_CUDA_LAUNCH_CHECK();
  }
  if (out == 0) return;
  const dim3 grid(static_cast<unsigned>((in + TN - 1) / TN), static_cast<unsigned>((out + TM - 1) / TM),
                  static_cast<unsigned>(E));
  const Bf16RoundedOperand xr(x, p);
  grouped_dw_kernel<<<grid, kThreads>>>(dw.ptr<float>(), dyr.t().ptr<float>(), xr.t().ptr<float>(),
                                        offsets.ptr<int32_t>(), int(out), int(in));
  NW_CUDA_LAUNCH_CHECK();
}

}  // namespace nw::cuda
