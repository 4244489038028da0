// cuBLASLt plans for the bf16 dense GEMMs. cuBLASLt is column-major: a row-major C = op(A) op(B) is the
// column-major C^T = op(B)^T op(A)^T, so B is Lt's first operand and A its second, with the same
// transpose flags and M, N exchanged (as sgemm does with cuBLAS).
//
// Determinism: a plan is made once per (transposes, M, N, K, leading dimensions, pointer alignments) and
// keeps the heuristic's first algorithm, so one shape always runs one kernel with one split of K. Every
// reduction scheme cuBLASLt offers for split K adds the partial products in a fixed order (in place with
// counters that sequence the parts, or in the workspace followed by a separate reduction pass), none
// with float atomics, so these three are allowed by name (a scheme a later cuBLASLt adds is not): the
// weight gradients (K = tokens, a small M x N) need split K to fill the GPU. Bits are run-to-run
// identical on one GPU model and cuBLAS version, as cuBLAS guarantees for a single stream.
#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cublas.cuh"
#include "kernels/cublaslt.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/stream.cuh"

namespace nw::cuda {
namespace {

// Room for split K and the Hopper kernels' scratch; allocated once per device, so no GEMM allocates.
constexpr size_t kWorkspaceBytes = size_t(32) << 20;
constexpr int kMaxDevices = 64;

// The largest power of two (up to the 256 bytes cuBLASLt assumes by default) that divides the address:
// the heuristic only offers algorithms whose vector loads and stores fit the operands' actual alignment
// (scratch copies are 256-byte aligned, but C can be a view into a larger gradient buffer).
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align) align /= 2;
  return align;
}

struct PlanKey {
  bool trans_a, trans_b;
  int M, N, K, lda, ldb, ldc;
  uint32_t align_a, align_b, align_c;
  bool operator<(const PlanKey& o) const {
    return std::tie(trans_a, trans_b, M, N, K, lda, ldb, ldc, align_a, align_b, align_c) <
           std::tie(o.trans_a, o.trans_b, o.M, o.N, o.K, o.lda, o.ldb, o.ldc, o.align_a, o.align_b, o.align_c);
  }
};

// Everything cublasLtMatmul needs besides the pointers and scalars, made once per key. C and D share a
// layout: the GEMM runs in place on C.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t lt_a = nullptr, lt_b = nullptr, c = nullptr;  // Lt's A is our B, Lt's B our A
  cublasLtMatmulAlgo_t algo{};

  void destroy() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (lt_b) cublasLtMatrixLayoutDestroy(lt_b);
    if (lt_a) cublasLtMatrixLayoutDestroy(lt_a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// One device's handle, workspace and plans. They live until the process ends: destroying them from a
// static destructor can run after the CUDA runtime has shut down. Plans are few (one per distinct
// linear shape) and std::map keeps them at fixed addresses, so a found plan is used outside the lock.
struct LtDevice {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<PlanKey, Plan> plans;
};

std::mutex lt_mutex;

LtDevice& lt_device() {
  static LtDevice* devices[kMaxDevices] = {};
  int dev = 0;
  NW_CUDA_CHECK(cudaGetDevice(&dev));
  NW_CHECK(dev >= 0 && dev < kMaxDevices, "cuBLASLt: device index ", dev, " is out of range");
  if (!devices[dev]) {
    cublasLtHandle_t h = nullptr;
    NW_CUBLAS_CHECK(cublasLtCreate(&h));
    void* ws = nullptr;
    const cudaError_t err = cudaMalloc(&ws, kWorkspaceBytes);
    if (err != cudaSuccess) {
      cublasLtDestroy(h);
      NW_CUDA_CHECK(err);
    }
    devices[dev] = new LtDevice{h, ws, {}};
  }
  return *devices[dev];
}

void set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, uint32_t value) {
  NW_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
}

// The heuristic's first algorithm for the plan's descriptors within the workspace and the alignments.
void choose_algo(const LtDevice& d, Plan& p, const PlanKey& k) {
  cublasLtMatmulPreference_t pref = nullptr;
  NW_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  try {
    const uint64_t ws = kWorkspaceBytes;
    NW_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, k.align_b);
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, k.align_a);
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, k.align_c);
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, k.align_c);
    set_pref(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
             CUBLASLT_REDUCTION_SCHEME_INPLACE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
                 CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE);  // the ordered split-K schemes (see the top)
    NW_CUBLAS_CHECK(
        cublasLtMatmulAlgoGetHeuristic(d.handle, p.op, p.lt_a, p.lt_b, p.c, p.c, pref, 1, &result, &found));
  } catch (...) {
    cublasLtMatmulPreferenceDestroy(pref);
    throw;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  NW_CHECK(found > 0 && result.state == CUBLAS_STATUS_SUCCESS, "cuBLASLt has no bf16 algorithm for the GEMM (M ",
           k.M, ", N ", k.N, ", K ", k.K, ", lda ", k.lda, ", ldb ", k.ldb, ", ldc ", k.ldc, ", trans_a ",
           k.trans_a, ", trans_b ", k.trans_b, ")");
  p.algo = result.algo;
}

Plan make_plan(const LtDevice& d, const PlanKey& k) {
  Plan p;
  try {
    NW_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = k.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = k.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    NW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    NW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    // Column-major storage of the row-major operands: our B is (K, N) row-major, or (N, K) when
    // transposed; our A is (M, K), or (K, M) when transposed; C is (M, N).
    NW_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.lt_a, CUDA_R_16BF, k.trans_b ? k.K : k.N, k.trans_b ? k.N : k.K,
                                               k.ldb));
    NW_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.lt_b, CUDA_R_16BF, k.trans_a ? k.M : k.K, k.trans_a ? k.K : k.M,
                                               k.lda));
    NW_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, k.N, k.M, k.ldc));
    choose_algo(d, p, k);
  } catch (...) {
    p.destroy();
    throw;
  }
  return p;
}

}  // namespace

void gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const __nv_bfloat16* A, int lda,
               const __nv_bfloat16* B, int ldb, float beta, float* C, int ldc) {
  NW_CHECK(beta == 0.f || beta == 1.f, "gemm_bf16: beta must be 0 or 1, got ", beta);
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: C = beta C (cuBLASLt has no layout with zero columns)
    if (beta == 0.f)
      NW_CUDA_CHECK(cudaMemset2DAsync(C, size_t(ldc) * sizeof(float), 0, size_t(N) * sizeof(float), M, detail::stream()));
    return;
  }
  const PlanKey key{ta, tb, M, N, K, lda, ldb, ldc, alignment_of(A), alignment_of(B), alignment_of(C)};
  const Plan* plan = nullptr;
  LtDevice* d = nullptr;
  {
    std::lock_guard<std::mutex> lock(lt_mutex);
    d = &lt_device();
    auto it = d->plans.find(key);
    if (it == d->plans.end()) it = d->plans.emplace(key, make_plan(*d, key)).first;
    plan = &it->second;
  }
  // The workspace is shared by every GEMM on the device: they all run on the compute stream, in order.
  NW_CUBLAS_CHECK(cublasLtMatmul(d->handle, plan->op, &alpha, B, plan->lt_a, A, plan->lt_b, &beta, C, plan->c, C,
                                 plan->c, &plan->algo, d->workspace, kWorkspaceBytes, detail::stream()));
}

}  // namespace nw::cuda
