// CUDA causal attention (fp32) with grouped-query heads, a sliding window and a KV-cache variant.
// bf16 precision with head dims 64 and 128 (training forward and backward) runs on tensor cores in
// kernels/attention_flash.cu; the kernels here serve fp32, the other head dims and the KV cache.
// Query t (at position pos = Tk - Tq + t) sees keys [first_key(pos), pos], first_key as on the CPU.
// - forward: one thread per query, 64 queries of one (batch, head) per block; keys and values stream
//   through shared memory 32 rows at a time; an online softmax keeps (max, sum, acc) per thread and
//   writes y and lse = max + log(sum).
// - backward, without atomics: delta_t = dy_t . y_t first (one warp per row); then
//   dq: one thread per query (same tiling as the forward), summing over its keys in key order;
//   dk, dv: one thread per key, 64 keys of one (batch, kv head) per block, summing over the group's
//   query heads and then the queries that see the key, in a fixed order. Each output element has
//   one owner thread, so results are bit-identical run to run.
// Head dims up to 128 are supported (the vectors live in registers padded to 32, 64 or 128).
// bf16 precision: q, k, v and dy are read rounded to bf16 (float32 copies); the probabilities are
// rounded before they multiply V (forward) or dY (dV), and dS before it multiplies K or Q, as a
// tensor-core kernel feeds its MMAs; scores, softmax statistics, lse and delta stay float32. The
// forward rounds the running (unnormalised) probabilities, as FlashAttention does, where the CPU
// emulation rounds the normalised ones: both are within bf16 rounding of each other.
#include <cmath>

#include "kernels/attention_flash.cuh"
#include "kernels/bf16.cuh"
#include "kernels/common.cuh"
#include "ops/attention.h"

namespace nw::cuda {

namespace {
constexpr int kQB = 64;  // queries per block (forward, dq)
constexpr int kKB = 64;  // keys per block (dk, dv)
constexpr int kKT = 32;  // keys per shared-memory tile (forward, dq)
constexpr int kQT = 32;  // queries per shared-memory tile (dk, dv)

__device__ __forceinline__ int64_t first_key(int64_t p, int window) {
  return window > 0 ? (p - window + 1 > 0 ? p - window + 1 : 0) : 0;
}

struct Shape {
  int64_t B, Tq, Tk, Tcap, H, KVH, D, G;
  float scale;
  bool bf16;  // round the probabilities and dS to bf16 before their products
};

__device__ __forceinline__ float operand(float x, const Shape& d) { return d.bf16 ? round_bf16(x) : x; }

// Loads rows [s0, s0 + rows) of one (batch, kv head) of a (B, Tcap, KVH, D) tensor into dst (rows, MAXD),
// zero-filling columns >= D and rows past `limit`.
template <int MAXD>
__device__ void load_rows(float* dst, const float* src, int64_t s0, int rows, int64_t limit, int64_t row_stride,
                          int64_t D) {
  for (int i = threadIdx.x; i < rows * MAXD; i += blockDim.x) {
    const int r = i / MAXD, c = i % MAXD;
    const int64_t s = s0 + r;
    dst[i] = (s < limit && c < D) ? src[s * row_stride + c] : 0.f;
  }
}

template <int MAXD>
__global__ void __launch_bounds__(kQB) attention_forward_kernel(float* y, float* lse, const float* q, const float* k,
                                                               const float* v, Shape d, int window) {
  __shared__ float Ks[kKT * MAXD], Vs[kKT * MAXD];
  const int64_t b = blockIdx.z, h = blockIdx.y, kvh = h / d.G;
  const int64_t t0 = int64_t(blockIdx.x) * kQB, t = t0 + threadIdx.x, q_off = d.Tk - d.Tq;
  const bool valid = t < d.Tq;
  const int64_t pos = q_off + t;
  const int64_t qrow = d.H * d.D, kvrow = d.KVH * d.D;
  const float* qp = q + (b * d.Tq + t) * qrow + h * d.D;
  const float* kbase = k + b * d.Tcap * kvrow + kvh * d.D;
  const float* vbase = v + b * d.Tcap * kvrow + kvh * d.D;
  float qv[MAXD], acc[MAXD];
#pragma unroll
  for (int i = 0; i < MAXD; ++i) {
    qv[i] = (valid && i < d.D) ? qp[i] : 0.f;
    acc[i] = 0.f;
  }
  float mx = -INFINITY, sum = 0.f;
  const int64_t lo = first_key(q_off + t0, window);
  const int64_t hi = min(q_off + t0 + kQB - 1, d.Tk - 1);  // the block's last visible key
  const int64_t s_first = first_key(pos, window);
  for (int64_t s0 = lo; s0 <= hi; s0 += kKT) {
    __syncthreads();
    load_rows<MAXD>(Ks, kbase, s0, kKT, d.Tk, kvrow, d.D);
    load_rows<MAXD>(Vs, vbase, s0, kKT, d.Tk, kvrow, d.D);
    __syncthreads();
    if (!valid) continue;
    for (int j = 0; j < kKT; ++j) {
      const int64_t s = s0 + j;
      if (s < s_first || s > pos) continue;
      const float* kr = Ks + j * MAXD;
      float dot = 0.f;
#pragma unroll
      for (int i = 0; i < MAXD; ++i) dot += qv[i] * kr[i];
      const float score = dot * d.scale;
      if (score > mx) {  // rescale the running sums to the new maximum
        const float corr = expf(mx - score);
        sum *= corr;
#pragma unroll
        for (int i = 0; i < MAXD; ++i) acc[i] *= corr;
        mx = score;
      }
      const float p = expf(score - mx);
      sum += p;
      const float pv = operand(p, d);
      const float* vr = Vs + j * MAXD;
#pragma unroll
      for (int i = 0; i < MAXD; ++i) acc[i] += pv * vr[i];
    }
  }
  if (!valid) return;
  const float inv = 1.f / sum;
  float* yp = y + (b * d.Tq + t) * qrow + h * d.D;
#pragma unroll
  for (int i = 0; i < MAXD; ++i)
    if (i < d.D) yp[i] = acc[i] * inv;
  if (lse) lse[(b * d.H + h) * d.Tq + t] = mx + logf(sum);
}

// delta[(b*H + h)*T + t] = dy . y over the head's D values (dy rounded to bf16 first when round_dy);
// one warp per (b, t, h) row.
__global__ void attention_delta_kernel(float* delta, const float* dy, const float* y, int64_t B, int64_t T, int64_t H,
                                       int64_t D, bool round_dy) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;  // (b*T + t)*H + h
  const int lane = threadIdx.x % 32;
  if (row >= B * T * H) return;
  float s = 0.f;
  for (int64_t i = lane; i < D; i += 32) s += (round_dy ? round_bf16(dy[row * D + i]) : dy[row * D + i]) * y[row * D + i];
  s = detail::warp_sum(s);
  const int64_t h = row % H, t = (row / H) % T, b = row / (H * T);
  if (lane == 0) delta[(b * H + h) * T + t] = s;
}

template <int MAXD>
__global__ void __launch_bounds__(kQB) attention_dq_kernel(float* dq, const float* dy, const float* q, const float* k,
                                                          const float* v, const float* lse, const float* delta,
                                                          Shape d, int window) {
  __shared__ float Ks[kKT * MAXD], Vs[kKT * MAXD];
  const int64_t b = blockIdx.z, h = blockIdx.y, kvh = h / d.G, T = d.Tq;
  const int64_t t0 = int64_t(blockIdx.x) * kQB, t = t0 + threadIdx.x;
  const bool valid = t < T;
  const int64_t qrow = d.H * d.D, kvrow = d.KVH * d.D;
  const float* kbase = k + b * d.Tcap * kvrow + kvh * d.D;
  const float* vbase = v + b * d.Tcap * kvrow + kvh * d.D;
  float qv[MAXD], gv[MAXD], acc[MAXD];
#pragma unroll
  for (int i = 0; i < MAXD; ++i) {
    const bool in = valid && i < d.D;
    qv[i] = in ? q[(b * T + t) * qrow + h * d.D + i] : 0.f;
    gv[i] = in ? dy[(b * T + t) * qrow + h * d.D + i] : 0.f;
    acc[i] = 0.f;
  }
  const float l = valid ? lse[(b * d.H + h) * T + t] : 0.f;
  const float dl = valid ? delta[(b * d.H + h) * T + t] : 0.f;
  const int64_t lo = first_key(t0, window), hi = min(t0 + kQB - 1, T - 1), s_first = first_key(t, window);
  for (int64_t s0 = lo; s0 <= hi; s0 += kKT) {
    __syncthreads();
    load_rows<MAXD>(Ks, kbase, s0, kKT, T, kvrow, d.D);
    load_rows<MAXD>(Vs, vbase, s0, kKT, T, kvrow, d.D);
    __syncthreads();
    if (!valid) continue;
    for (int j = 0; j < kKT; ++j) {
      const int64_t s = s0 + j;
      if (s < s_first || s > t) continue;
      const float* kr = Ks + j * MAXD;
      const float* vr = Vs + j * MAXD;
      float qk = 0.f, gvd = 0.f;
#pragma unroll
      for (int i = 0; i < MAXD; ++i) {
        qk += qv[i] * kr[i];
        gvd += gv[i] * vr[i];
      }
      const float p = expf(qk * d.scale - l);
      const float ds = operand(p * (gvd - dl) * d.scale, d);
#pragma unroll
      for (int i = 0; i < MAXD; ++i) acc[i] += ds * kr[i];
    }
  }
  if (!valid) return;
  float* out = dq + (b * T + t) * qrow + h * d.D;
#pragma unroll
  for (int i = 0; i < MAXD; ++i)
    if (i < d.D) out[i] = acc[i];
}

// Dynamic shared memory: own K, V rows (kKB, MAXD + 1) (odd stride: no bank conflicts between the
// threads' own rows), then Q, dY tiles (kQT, MAXD) and the tile's lse and delta.
template <int MAXD>
constexpr size_t dkv_smem_bytes() {
  return sizeof(float) * (2 * kKB * (MAXD + 1) + 2 * kQT * MAXD + 2 * kQT);
}

template <int MAXD>
__global__ void __launch_bounds__(kKB) attention_dkv_kernel(float* dk, float* dv, const float* dy, const float* q,
                                                           const float* k, const float* v, const float* lse,
                                                           const float* delta, Shape d, int window) {
  extern __shared__ float smem[];
  float* Kown = smem;
  float* Vown = Kown + kKB * (MAXD + 1);
  float* Qs = Vown + kKB * (MAXD + 1);
  float* Gs = Qs + kQT * MAXD;
  float* Ls = Gs + kQT * MAXD;
  float* Ds = Ls + kQT;
  const int64_t b = blockIdx.z, kvh = blockIdx.y, T = d.Tq;
  const int64_t k0 = int64_t(blockIdx.x) * kKB, s = k0 + threadIdx.x;
  const bool valid = s < T;
  const int64_t qrow = d.H * d.D, kvrow = d.KVH * d.D;
  for (int i = threadIdx.x; i < kKB * MAXD; i += blockDim.x) {
    const int r = i / MAXD, c = i % MAXD;
    const bool in = k0 + r < T && c < d.D;
    const int64_t at = (b * d.Tcap + k0 + r) * kvrow + kvh * d.D + c;
    Kown[r * (MAXD + 1) + c] = in ? k[at] : 0.f;
    Vown[r * (MAXD + 1) + c] = in ? v[at] : 0.f;
  }
  const float* kr = Kown + threadIdx.x * (MAXD + 1);
  const float* vr = Vown + threadIdx.x * (MAXD + 1);
  float dka[MAXD], dva[MAXD];
#pragma unroll
  for (int i = 0; i < MAXD; ++i) dka[i] = dva[i] = 0.f;
  // Queries that see some key of the block: [k0, last], last bounded by the window.
  const int64_t last = window > 0 ? min(T - 1, k0 + kKB - 1 + window - 1) : T - 1;
  for (int64_t h = kvh * d.G; h < (kvh + 1) * d.G; ++h) {
    for (int64_t t0 = k0; t0 <= last; t0 += kQT) {
      __syncthreads();
      for (int i = threadIdx.x; i < kQT * MAXD; i += blockDim.x) {
        const int r = i / MAXD, c = i % MAXD;
        const bool in = t0 + r < T && c < d.D;
        const int64_t at = (b * T + t0 + r) * qrow + h * d.D + c;
        Qs[i] = in ? q[at] : 0.f;
        Gs[i] = in ? dy[at] : 0.f;
      }
      for (int r = threadIdx.x; r < kQT; r += blockDim.x) {
        const bool in = t0 + r < T;
        Ls[r] = in ? lse[(b * d.H + h) * T + t0 + r] : 0.f;
        Ds[r] = in ? delta[(b * d.H + h) * T + t0 + r] : 0.f;
      }
      __syncthreads();
      if (!valid) continue;
      for (int j = 0; j < kQT; ++j) {
        const int64_t t = t0 + j;
        if (t >= T || t < s || s < first_key(t, window)) continue;
        const float* qr = Qs + j * MAXD;
        const float* gr = Gs + j * MAXD;
        float qk = 0.f, gvd = 0.f;
#pragma unroll
        for (int i = 0; i < MAXD; ++i) {
          qk += qr[i] * kr[i];
          gvd += gr[i] * vr[i];
        }
        const float p = expf(qk * d.scale - Ls[j]);
        const float ds = operand(p * (gvd - Ds[j]) * d.scale, d), pv = operand(p, d);
#pragma unroll
        for (int i = 0; i < MAXD; ++i) {
          dva[i] += pv * gr[i];
          dka[i] += ds * qr[i];
        }
      }
    }
  }
  if (!valid) return;
  const int64_t at = (b * d.Tcap + s) * kvrow + kvh * d.D;
#pragma unroll
  for (int i = 0; i < MAXD; ++i)
    if (i < d.D) {
      dk[at + i] = dka[i];
      dv[at + i] = dva[i];
    }
}

Shape make_shape(const Tensor& q, const Tensor& k, int64_t kv_len, Precision p) {
  Shape d;
  d.B = q.size(0);
  d.Tq = q.size(1);
  d.Tk = kv_len;
  d.Tcap = k.size(1);
  d.H = q.size(2);
  d.D = q.size(3);
  d.KVH = k.size(2);
  d.G = d.H / d.KVH;
  d.scale = 1.f / std::sqrt(float(d.D));  // the CPU's T(1) / sqrt(T(D))
  d.bf16 = p == Precision::BF16;
  return d;
}

FlashShape flash_shape(const Tensor& q, const Tensor& k) {
  return FlashShape{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3)};
}

// Calls f(std::integral_constant<int, MAXD>) for the smallest supported MAXD >= D.
template <typename F>
void with_head_dim(int64_t D, const char* op, F&& f) {
  NW_CHECK(D >= 1 && D <= 128, op, ": the CUDA kernel supports head dims 1..128, got ", D);
  if (D <= 32) f(std::integral_constant<int, 32>());
  else if (D <= 64) f(std::integral_constant<int, 64>());
  else f(std::integral_constant<int, 128>());
}

void launch_forward(const Tensor& y, float* lse, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                    int64_t kv_len, int window, Precision p, const char* op) {
  const Shape d = make_shape(q_in, k_in, kv_len, p);
  if (d.B * d.Tq * d.H == 0) return;
  const Bf16RoundedOperand qr(q_in, p), kr(k_in, p), vr(v_in, p);
  const Tensor &q = qr.t(), &k = kr.t(), &v = vr.t();
  NW_CHECK(d.H < 65536 && d.B < 65536, op, ": too many heads or sequences for the CUDA grid");
  const dim3 grid(static_cast<unsigned>((d.Tq + kQB - 1) / kQB), static_cast<unsigned>(d.H),
                  static_cast<unsigned>(d.B));
  with_head_dim(d.D, op, [&](auto maxd) {
    attention_forward_kernel<decltype(maxd)::value><<<grid, kQB, 0, detail::stream()>>>(y.ptr<float>(), lse, q.ptr<float>(), k.ptr<float>(),
                                                                   v.ptr<float>(), d, window);
    NW_CUDA_LAUNCH_CHECK();
  });
}
}  // namespace

void attention_forward(const Tensor& y, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                       int window, Precision p) {
  detail::require_f32("attention_forward", {&y, &lse, &q, &k, &v});
  if (p == Precision::BF16 && flash_attention_supports(q.size(3)))
    return flash_attention_forward(y.ptr<float>(), lse.ptr<float>(), q.ptr<float>(), k.ptr<float>(), v.ptr<float>(),
                                   flash_shape(q, k), window);
  launch_forward(y, lse.ptr<float>(), q, k, v, k.size(1), window, p, "attention_forward");
}

void attention_forward_kv(const Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v, int64_t kv_len,
                          int window, Precision p) {
  detail::require_f32("attention_forward_kv", {&y, &q, &k, &v});
  launch_forward(y, nullptr, q, k, v, kv_len, window, p, "attention_forward_kv");
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dy_in,
                        const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& y, const Tensor& lse,
                        int window, Precision p) {
  const char* op = "attention_backward";
  detail::require_f32(op, {&dq, &dk, &dv, &dy_in, &q_in, &k_in, &v_in, &y, &lse});
  const Shape d = make_shape(q_in, k_in, k_in.size(1), p);  // training: Tq == Tk == Tcap
  if (d.B * d.Tq * d.H == 0) return;
  const int64_t rows = d.B * d.Tq * d.H;
  detail::Scratch delta(rows * sizeof(float));
  const unsigned delta_blocks = static_cast<unsigned>((rows * 32 + 255) / 256);
  if (p == Precision::BF16 && flash_attention_supports(d.D)) {  // tensor cores, bf16 operands converted inside
    attention_delta_kernel<<<delta_blocks, 256, 0, detail::stream()>>>(delta.as<float>(), dy_in.ptr<float>(), y.ptr<float>(), d.B, d.Tq,
                                                  d.H, d.D, true);
    NW_CUDA_LAUNCH_CHECK();
    return flash_attention_backward(dq.ptr<float>(), dk.ptr<float>(), dv.ptr<float>(), dy_in.ptr<float>(),
                                    q_in.ptr<float>(), k_in.ptr<float>(), v_in.ptr<float>(), lse.ptr<float>(),
                                    delta.as<float>(), flash_shape(q_in, k_in), window);
  }
  const Bf16RoundedOperand qr(q_in, p), kr(k_in, p), vr(v_in, p), dyr(dy_in, p);
  const Tensor &q = qr.t(), &k = kr.t(), &v = vr.t(), &dy = dyr.t();
  NW_CHECK(d.H < 65536 && d.B < 65536, op, ": too many heads or sequences for the CUDA grid");
  attention_delta_kernel<<<delta_blocks, 256, 0, detail::stream()>>>(delta.as<float>(), dy.ptr<float>(), y.ptr<float>(), d.B, d.Tq, d.H,
                                                d.D, false);
  NW_CUDA_LAUNCH_CHECK();
  with_head_dim(d.D, op, [&](auto maxd) {
    constexpr int MAXD = decltype(maxd)::value;
    const dim3 qgrid(static_cast<unsigned>((d.Tq + kQB - 1) / kQB), static_cast<unsigned>(d.H),
                     static_cast<unsigned>(d.B));
    attention_dq_kernel<MAXD><<<qgrid, kQB, 0, detail::stream()>>>(dq.ptr<float>(), dy.ptr<float>(), q.ptr<float>(), k.ptr<float>(),
                                              v.ptr<float>(), lse.ptr<float>(), delta.as<float>(), d, window);
    NW_CUDA_LAUNCH_CHECK();
    constexpr size_t smem = dkv_smem_bytes<MAXD>();
    NW_CUDA_CHECK(cudaFuncSetAttribute(attention_dkv_kernel<MAXD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
    const dim3 kgrid(static_cast<unsigned>((d.Tq + kKB - 1) / kKB), static_cast<unsigned>(d.KVH),
                     static_cast<unsigned>(d.B));
    attention_dkv_kernel<MAXD><<<kgrid, kKB, smem, detail::stream()>>>(dk.ptr<float>(), dv.ptr<float>(), dy.ptr<float>(), q.ptr<float>(),
                                                     k.ptr<float>(), v.ptr<float>(), lse.ptr<float>(), delta.as<float>(),
                                                     d, window);
    NW_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace nw::cuda
