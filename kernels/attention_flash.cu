// Causal attention on tensor cores (bf16 precision), FlashAttention-2 style, for head dims 64 and 128.
// Semantics as ops/attention.h: GQA (query head h reads kv head h / G), sliding window (query t sees keys
// [first_key(t), t]), scale 1/sqrt(D); q, k, v, dy are float32 tensors converted to bf16 (round to
// nearest even, the CPU emulation's values) as they are staged in shared memory.
//
// Every block has 4 warps; each warp owns 16 rows of a 64-row block (queries, or keys for dK/dV) and
// runs WMMA 16x16x16 bf16 products with float32 accumulation over 64-wide tiles of the other side.
// - forward: block = 64 queries of one (b, h). Key/value tiles of 64 rows stream through shared memory;
//   S = Q K^T goes to shared memory, each row's online softmax (max, sum in float32) rescales the
//   float32 output rows there and writes the unnormalised probabilities P as bf16; O += P V on tensor
//   cores. Finally y = O / sum, lse = max + log(sum).
// - backward, without atomics: dK, dV: block = 64 keys of one (b, kv head); it loops over the group's
//   query heads, then over the 64-query tiles that see its keys, recomputing P = exp(scale S - lse) and
//   dS = P (dP - delta) scale, rounded to bf16, and accumulating dV += P^T dY, dK += dS^T Q in registers.
//   dQ: block = 64 queries of one (b, h), looping over the key tiles in order, dQ += dS K.
// Each output element belongs to one warp and is summed in a fixed order: bit-identical run to run.
// Rounding points match the CUDA fallback kernel and the CPU emulation (P before P V and P^T dY, dS
// before dS K and dS^T Q); the forward rounds the running probabilities as the fallback does.
#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>

#include "kernels/attention_flash.cuh"
#include "kernels/common.cuh"

namespace nw::cuda {

namespace {
using namespace nvcuda;
using bf16 = __nv_bfloat16;

constexpr int kRows = 64;              // a block's own rows: queries (forward, dQ) or keys (dK, dV)
constexpr int kCols = 64;              // rows of the other side per shared-memory tile
constexpr int kWarps = kRows / 16;     // 16 own rows per warp
constexpr int kThreads = kWarps * 32;
constexpr int kPadH = 8;               // bf16 row padding: WMMA needs ldm % 8 == 0; skews the banks
constexpr int kPadF = 4;               // float row padding: ldm % 4 == 0
constexpr int kLdS = kCols + kPadF;    // float (rows, kCols) score tiles
constexpr int kLdP = kCols + kPadH;    // bf16 (rows, kCols) probability tiles

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

__device__ __forceinline__ int64_t first_key(int64_t t, int window) {
  return window > 0 ? (t - window + 1 > 0 ? t - window + 1 : 0) : 0;
}

// dst (64, HD + kPadH) bf16 = rows [r0, r0 + 64) of one head of a float tensor whose row r starts at
// base + r * stride; rows >= limit are zero.
template <int HD>
__device__ void load_tile(bf16* dst, const float* base, int64_t r0, int64_t limit, int64_t stride) {
  for (int i = threadIdx.x; i < kRows * HD; i += kThreads) {
    const int r = i / HD, c = i % HD;
    const int64_t row = r0 + r;
    dst[r * (HD + kPadH) + c] = __float2bfloat16_rn(row < limit ? base[row * stride + c] : 0.f);
  }
}

// out (16, kCols) float (ld kLdS) = A (16, HD) B^T, with A a warp's 16 rows and B (kCols, HD) a tile,
// both bf16 with ld HD + kPadH. B^T is B read column-major.
template <int HD>
__device__ void warp_abt(float* out, const bf16* a, const bf16* b) {
  constexpr int ld = HD + kPadH;
#pragma unroll
  for (int j = 0; j < kCols / 16; ++j) {
    FragC c;
    wmma::fill_fragment(c, 0.f);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      FragA fa;
      FragBCol fb;
      wmma::load_matrix_sync(fa, a + kk * 16, ld);
      wmma::load_matrix_sync(fb, b + j * 16 * ld + kk * 16, ld);
      wmma::mma_sync(c, fa, fb, c);
    }
    wmma::store_matrix_sync(out + j * 16, c, kLdS, wmma::mem_row_major);
  }
}

// acc[n] (16, 16) += P (16, kCols) B[:, 16n, 16n + 16) for n < HD / 16: P a warp's bf16 rows (ld kLdP),
// B (kCols, HD) a bf16 tile (ld HD + kPadH). Summed in tile-column order.
template <int HD>
__device__ void warp_pb(FragC (&acc)[HD / 16], const bf16* p, const bf16* b) {
  constexpr int ld = HD + kPadH;
#pragma unroll
  for (int kk = 0; kk < kCols / 16; ++kk) {
    FragA fa;
    wmma::load_matrix_sync(fa, p + kk * 16, kLdP);
#pragma unroll
    for (int n = 0; n < HD / 16; ++n) {
      FragBRow fb;
      wmma::load_matrix_sync(fb, b + kk * 16 * ld + n * 16, ld);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// Writes a warp's accumulators acc (16, HD) to rows [r0, r0 + 16) of one head of a float tensor (row r
// at base + r * stride), rows >= limit skipped; stage (16, kLdS) float is the warp's scratch.
template <int HD>
__device__ void warp_store_rows(float* base, int64_t r0, int64_t limit, int64_t stride, FragC (&acc)[HD / 16],
                                float* stage) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < HD / 16; ++n) {
    __syncwarp();  // the stage's previous contents have been read
    wmma::store_matrix_sync(stage, acc[n], kLdS, wmma::mem_row_major);
    __syncwarp();
    for (int i = lane; i < 16 * 16; i += 32) {
      const int r = i / 16, c = i % 16;
      if (r0 + r < limit) base[(r0 + r) * stride + n * 16 + c] = stage[r * kLdS + c];
    }
  }
}

template <int HD>
constexpr size_t forward_smem_bytes() {  // Q, K, V tiles and P (bf16); S and O (float)
  return sizeof(bf16) * (3 * kRows * (HD + kPadH) + kRows * kLdP) + sizeof(float) * kRows * (kLdS + HD + kPadF);
}

template <int HD>
__global__ void __launch_bounds__(kThreads) flash_forward_kernel(float* y, float* lse, const float* q, const float* k,
                                                                 const float* v, FlashShape d, int window,
                                                                 float scale) {
  constexpr int ldh = HD + kPadH, ldo = HD + kPadF;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);                 // (kRows, ldh)
  bf16* Ks = Qs + kRows * ldh;                              // (kCols, ldh)
  bf16* Vs = Ks + kCols * ldh;                              // (kCols, ldh)
  bf16* Ps = Vs + kCols * ldh;                              // (kRows, kLdP)
  float* Ss = reinterpret_cast<float*>(Ps + kRows * kLdP);  // (kRows, kLdS)
  float* Os = Ss + kRows * kLdS;                            // (kRows, ldo)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.z, h = blockIdx.y, kvh = h / (d.H / d.KVH), T = d.T;
  const int64_t t0 = int64_t(blockIdx.x) * kRows;
  const int64_t qstride = d.H * HD, kvstride = d.KVH * HD;  // (B, T, H, HD), (B, T, KVH, HD)
  const float* qbase = q + b * T * qstride + h * HD;
  const float* kbase = k + b * T * kvstride + kvh * HD;
  const float* vbase = v + b * T * kvstride + kvh * HD;
  load_tile<HD>(Qs, qbase, t0, T, qstride);
  for (int i = threadIdx.x; i < kRows * ldo; i += kThreads) Os[i] = 0.f;

  // The warp's rows; lane handles row r, the even (half 0) or odd (half 1) columns of S and O, so the
  // row's two lanes read neighbouring words.
  const bf16* Qw = Qs + warp * 16 * ldh;
  bf16* Pw = Ps + warp * 16 * kLdP;
  float* Sw = Ss + warp * 16 * kLdS;
  float* Ow = Os + warp * 16 * ldo;
  const int r = lane / 2, half = lane % 2;
  const int64_t t = t0 + warp * 16 + r;
  const bool valid = t < T;
  const int64_t s_first = first_key(t, window);
  float m = -INFINITY, l = 0.f;  // running max and sum of row t

  const int64_t lo = first_key(t0, window), hi = min(t0 + kRows - 1, T - 1);  // keys the block's rows see
  for (int64_t s0 = lo; s0 <= hi; s0 += kCols) {
    __syncthreads();  // the previous tile is consumed (first pass: Q and O are ready)
    load_tile<HD>(Ks, kbase, s0, T, kvstride);
    load_tile<HD>(Vs, vbase, s0, T, kvstride);
    __syncthreads();
    warp_abt<HD>(Sw, Qw, Ks);  // (16, kCols) = Q_w K^T
    __syncwarp();
    float* srow = Sw + r * kLdS;
    float tile_max = -INFINITY;
    for (int c = half; c < kCols; c += 2) {
      const int64_t s = s0 + c;
      const bool visible = valid && s >= s_first && s <= t;
      srow[c] = visible ? srow[c] * scale : -INFINITY;
      tile_max = fmaxf(tile_max, srow[c]);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    const float corr = m_new == -INFINITY ? 1.f : expf(m - m_new);  // no key seen yet: nothing to rescale
    bf16* prow = Pw + r * kLdP;
    float psum = 0.f;
    for (int c = half; c < kCols; c += 2) {
      const float p = srow[c] == -INFINITY ? 0.f : expf(srow[c] - m_new);
      psum += p;
      prow[c] = __float2bfloat16_rn(p);
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);  // both lanes of the row get the same sum
    l = l * corr + psum;
    m = m_new;
    float* orow = Ow + r * ldo;
    for (int c = half; c < HD; c += 2) orow[c] *= corr;
    __syncwarp();
    // O_w (16, HD) += P_w (16, kCols) V (kCols, HD), through the float rows in shared memory.
#pragma unroll
    for (int n = 0; n < HD / 16; ++n) {
      FragC c;
      wmma::load_matrix_sync(c, Ow + n * 16, ldo, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kCols / 16; ++kk) {
        FragA fa;
        FragBRow fb;
        wmma::load_matrix_sync(fa, Pw + kk * 16, kLdP);
        wmma::load_matrix_sync(fb, Vs + kk * 16 * ldh + n * 16, ldh);
        wmma::mma_sync(c, fa, fb, c);
      }
      wmma::store_matrix_sync(Ow + n * 16, c, ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (!valid) return;
  const float inv = 1.f / l;
  const float* orow = Ow + r * ldo;
  float* yrow = y + (b * T + t) * qstride + h * HD;
  for (int c = half; c < HD; c += 2) yrow[c] = orow[c] * inv;
  if (half == 0) lse[(b * d.H + h) * T + t] = m + logf(l);
}

template <int HD>
constexpr size_t dkv_smem_bytes() {  // K, V (own), Q, dY tiles and P^T, dS^T (bf16); S^T, dP^T, lse, delta
  return sizeof(bf16) * (4 * kRows * (HD + kPadH) + 2 * kRows * kLdP) + sizeof(float) * (2 * kRows * kLdS + 2 * kCols);
}

template <int HD>
__global__ void __launch_bounds__(kThreads) flash_dkv_kernel(float* dk, float* dv, const float* dy, const float* q,
                                                             const float* k, const float* v, const float* lse,
                                                             const float* delta, FlashShape d, int window,
                                                             float scale) {
  constexpr int ldh = HD + kPadH;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);                  // (kRows, ldh) own keys
  bf16* Vs = Ks + kRows * ldh;                               // (kRows, ldh) own values
  bf16* Qs = Vs + kRows * ldh;                               // (kCols, ldh) query tile
  bf16* Gs = Qs + kCols * ldh;                               // (kCols, ldh) dY tile
  bf16* Pts = Gs + kCols * ldh;                              // (kRows, kLdP) P^T
  bf16* dSts = Pts + kRows * kLdP;                           // (kRows, kLdP) dS^T
  float* Sts = reinterpret_cast<float*>(dSts + kRows * kLdP);  // (kRows, kLdS) S^T
  float* dPts = Sts + kRows * kLdS;                          // (kRows, kLdS) dP^T
  float* Ls = dPts + kRows * kLdS;                           // (kCols) lse of the tile's queries
  float* Ds = Ls + kCols;                                    // (kCols) delta of the tile's queries
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.z, kvh = blockIdx.y, T = d.T, G = d.H / d.KVH;
  const int64_t k0 = int64_t(blockIdx.x) * kRows;
  const int64_t qstride = d.H * HD, kvstride = d.KVH * HD;  // (B, T, H, HD), (B, T, KVH, HD)
  const float* kbase = k + b * T * kvstride + kvh * HD;
  const float* vbase = v + b * T * kvstride + kvh * HD;
  load_tile<HD>(Ks, kbase, k0, T, kvstride);
  load_tile<HD>(Vs, vbase, k0, T, kvstride);

  const bf16* Kw = Ks + warp * 16 * ldh;
  const bf16* Vw = Vs + warp * 16 * ldh;
  bf16* Ptw = Pts + warp * 16 * kLdP;
  bf16* dStw = dSts + warp * 16 * kLdP;
  float* Stw = Sts + warp * 16 * kLdS;
  float* dPtw = dPts + warp * 16 * kLdS;
  const int r = lane / 2, half = lane % 2;  // lane: key row r, the even (half 0) or odd query columns
  const int64_t s = k0 + warp * 16 + r;
  FragC dk_acc[HD / 16], dv_acc[HD / 16];  // (16, HD) each: the warp's keys
#pragma unroll
  for (int n = 0; n < HD / 16; ++n) {
    wmma::fill_fragment(dk_acc[n], 0.f);
    wmma::fill_fragment(dv_acc[n], 0.f);
  }
  // Queries that see a key of the block: [k0, last], last bounded by the window.
  const int64_t last = window > 0 ? min(T - 1, k0 + kRows - 1 + window - 1) : T - 1;
  for (int64_t h = kvh * G; h < (kvh + 1) * G; ++h) {
    const float* qbase = q + b * T * qstride + h * HD;
    const float* gbase = dy + b * T * qstride + h * HD;
    for (int64_t t0 = k0; t0 <= last; t0 += kCols) {
      __syncthreads();  // the previous tile is consumed (first pass: own K, V are ready)
      load_tile<HD>(Qs, qbase, t0, T, qstride);
      load_tile<HD>(Gs, gbase, t0, T, qstride);
      for (int i = threadIdx.x; i < kCols; i += kThreads) {
        const int64_t t = t0 + i;
        Ls[i] = t < T ? lse[(b * d.H + h) * T + t] : 0.f;
        Ds[i] = t < T ? delta[(b * d.H + h) * T + t] : 0.f;
      }
      __syncthreads();
      warp_abt<HD>(Stw, Kw, Qs);   // S^T  (16 keys, kCols queries) = K_w Q^T
      warp_abt<HD>(dPtw, Vw, Gs);  // dP^T (16, kCols) = V_w dY^T
      __syncwarp();
      for (int c = half; c < kCols; c += 2) {
        const int64_t t = t0 + c;
        const bool visible = s < T && t < T && t >= s && s >= first_key(t, window);
        const float p = visible ? expf(Stw[r * kLdS + c] * scale - Ls[c]) : 0.f;
        const float ds = visible ? p * (dPtw[r * kLdS + c] - Ds[c]) * scale : 0.f;
        Ptw[r * kLdP + c] = __float2bfloat16_rn(p);
        dStw[r * kLdP + c] = __float2bfloat16_rn(ds);
      }
      __syncwarp();
      warp_pb<HD>(dv_acc, Ptw, Gs);   // dV_w += P^T_w (16, kCols) dY (kCols, HD)
      warp_pb<HD>(dk_acc, dStw, Qs);  // dK_w += dS^T_w (16, kCols) Q (kCols, HD)
    }
  }
  float* dkbase = dk + b * T * kvstride + kvh * HD;
  float* dvbase = dv + b * T * kvstride + kvh * HD;
  warp_store_rows<HD>(dkbase, k0 + warp * 16, T, kvstride, dk_acc, Stw);
  warp_store_rows<HD>(dvbase, k0 + warp * 16, T, kvstride, dv_acc, Stw);
}

template <int HD>
constexpr size_t dq_smem_bytes() {  // Q, dY, K, V tiles and dS (bf16); S, dP (float)
  return sizeof(bf16) * (4 * kRows * (HD + kPadH) + kRows * kLdP) + sizeof(float) * 2 * kRows * kLdS;
}

template <int HD>
__global__ void __launch_bounds__(kThreads) flash_dq_kernel(float* dq, const float* dy, const float* q,
                                                            const float* k, const float* v, const float* lse,
                                                            const float* delta, FlashShape d, int window,
                                                            float scale) {
  constexpr int ldh = HD + kPadH;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);                 // (kRows, ldh)
  bf16* Gs = Qs + kRows * ldh;                              // (kRows, ldh) dY
  bf16* Ks = Gs + kRows * ldh;                              // (kCols, ldh)
  bf16* Vs = Ks + kCols * ldh;                              // (kCols, ldh)
  bf16* dSs = Vs + kCols * ldh;                             // (kRows, kLdP)
  float* Ss = reinterpret_cast<float*>(dSs + kRows * kLdP);  // (kRows, kLdS)
  float* dPs = Ss + kRows * kLdS;                           // (kRows, kLdS)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.z, h = blockIdx.y, kvh = h / (d.H / d.KVH), T = d.T;
  const int64_t t0 = int64_t(blockIdx.x) * kRows;
  const int64_t qstride = d.H * HD, kvstride = d.KVH * HD;  // (B, T, H, HD), (B, T, KVH, HD)
  const float* qbase = q + b * T * qstride + h * HD;
  const float* gbase = dy + b * T * qstride + h * HD;
  const float* kbase = k + b * T * kvstride + kvh * HD;
  const float* vbase = v + b * T * kvstride + kvh * HD;
  load_tile<HD>(Qs, qbase, t0, T, qstride);
  load_tile<HD>(Gs, gbase, t0, T, qstride);

  const bf16* Qw = Qs + warp * 16 * ldh;
  const bf16* Gw = Gs + warp * 16 * ldh;
  bf16* dSw = dSs + warp * 16 * kLdP;
  float* Sw = Ss + warp * 16 * kLdS;
  float* dPw = dPs + warp * 16 * kLdS;
  const int r = lane / 2, half = lane % 2;  // lane: query row r, the even (half 0) or odd key columns
  const int64_t t = t0 + warp * 16 + r;
  const bool valid = t < T;
  const float l = valid ? lse[(b * d.H + h) * T + t] : 0.f;
  const float dl = valid ? delta[(b * d.H + h) * T + t] : 0.f;
  const int64_t s_first = first_key(t, window);
  FragC dq_acc[HD / 16];  // (16, HD): the warp's queries
#pragma unroll
  for (int n = 0; n < HD / 16; ++n) wmma::fill_fragment(dq_acc[n], 0.f);

  const int64_t lo = first_key(t0, window), hi = min(t0 + kRows - 1, T - 1);  // keys the block's rows see
  for (int64_t s0 = lo; s0 <= hi; s0 += kCols) {
    __syncthreads();  // the previous tile is consumed (first pass: Q, dY are ready)
    load_tile<HD>(Ks, kbase, s0, T, kvstride);
    load_tile<HD>(Vs, vbase, s0, T, kvstride);
    __syncthreads();
    warp_abt<HD>(Sw, Qw, Ks);   // S  (16, kCols) = Q_w K^T
    warp_abt<HD>(dPw, Gw, Vs);  // dP (16, kCols) = dY_w V^T
    __syncwarp();
    for (int c = half; c < kCols; c += 2) {
      const int64_t s = s0 + c;
      const bool visible = valid && s >= s_first && s <= t;
      const float p = visible ? expf(Sw[r * kLdS + c] * scale - l) : 0.f;
      const float ds = visible ? p * (dPw[r * kLdS + c] - dl) * scale : 0.f;
      dSw[r * kLdP + c] = __float2bfloat16_rn(ds);
    }
    __syncwarp();
    warp_pb<HD>(dq_acc, dSw, Ks);  // dQ_w += dS_w (16, kCols) K (kCols, HD)
  }
  float* dqbase = dq + b * T * qstride + h * HD;
  warp_store_rows<HD>(dqbase, t0 + warp * 16, T, qstride, dq_acc, Sw);
}

// Calls f(std::integral_constant<int, HD>) for the instantiated head dim D.
template <typename F>
void with_flash_head_dim(int64_t D, F&& f) {
  NW_CHECK(flash_attention_supports(D), "flash attention: unsupported head dim ", D);
  if (D == 64) f(std::integral_constant<int, 64>());
  else f(std::integral_constant<int, 128>());
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  NW_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

dim3 grid_of(const FlashShape& s, int64_t heads) {
  NW_CHECK(heads < 65536 && s.B < 65536, "flash attention: too many heads or sequences for the CUDA grid");
  return dim3(static_cast<unsigned>((s.T + kRows - 1) / kRows), static_cast<unsigned>(heads),
              static_cast<unsigned>(s.B));
}
}  // namespace

bool flash_attention_supports(int64_t D) { return D == 64 || D == 128; }

void flash_attention_forward(float* y, float* lse, const float* q, const float* k, const float* v,
                             const FlashShape& s, int window) {
  if (s.B * s.T * s.H == 0) return;
  const float scale = 1.f / std::sqrt(float(s.D));  // the CPU's T(1) / sqrt(T(D))
  with_flash_head_dim(s.D, [&](auto hd) {
    constexpr int HD = decltype(hd)::value;
    constexpr size_t smem = forward_smem_bytes<HD>();
    allow_smem(flash_forward_kernel<HD>, smem);
    flash_forward_kernel<HD><<<grid_of(s, s.H), kThreads, smem, detail::stream()>>>(y, lse, q, k, v, s, window, scale);
    NW_CUDA_LAUNCH_CHECK();
  });
}

void flash_attention_backward(float* dq, float* dk, float* dv, const float* dy, const float* q, const float* k,
                              const float* v, const float* lse, const float* delta, const FlashShape& s,
                              int window) {
  if (s.B * s.T * s.H == 0) return;
  const float scale = 1.f / std::sqrt(float(s.D));
  with_flash_head_dim(s.D, [&](auto hd) {
    constexpr int HD = decltype(hd)::value;
    constexpr size_t kv_smem = dkv_smem_bytes<HD>(), q_smem = dq_smem_bytes<HD>();
    allow_smem(flash_dkv_kernel<HD>, kv_smem);
    flash_dkv_kernel<HD><<<grid_of(s, s.KVH), kThreads, kv_smem, detail::stream()>>>(dk, dv, dy, q, k, v, lse, delta, s, window, scale);
    NW_CUDA_LAUNCH_CHECK();
    allow_smem(flash_dq_kernel<HD>, q_smem);
    flash_dq_kernel<HD><<<grid_of(s, s.H), kThreads, q_smem, detail::stream()>>>(dq, dy, q, k, v, lse, delta, s, window, scale);
    NW_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace nw::cuda
