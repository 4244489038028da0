"""The nanowhale model in plain PyTorch (csrc/model/model.cpp, DESIGN.md §3), for the benchmarks.

Parameters live in a dict under nanowhale's names and shapes, e.g. "layers.1.moe.experts.w_in" is
(E, Hin, C); a linear layer with weight W (out, in) computes x @ W.T, as in nanowhale. Used by
bench_train_cpu.py (eager fp32, per-expert loop) and bench_train_gpu.py (bf16 autocast, torch.compile,
grouped-matmul expert dispatch when this torch has torch._grouped_mm).

MoE dispatch implementations (`moe_impl`):
  "loop"    tokens sorted by expert, one matmul pair per expert (host sync for the counts), summed back
            with index_add_.
  "grouped" tokens sorted by expert, all experts in one torch._grouped_mm per projection (bf16, counts
            stay on the device), combined by gathering each token's k rows in a fixed order (no atomics).
"""

import math

import torch
import torch.nn.functional as F


def rms_norm(x, gain, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1.0 if gain is None else gain)


def activation(pre, kind):
    if kind == "relu2":
        return F.relu(pre).square()
    gate, up = pre.chunk(2, dim=-1)  # swiglu: the first half of the rows is the gate
    return F.silu(gate) * up


def rope_tables(T, head_dim, base, device=None):
    half = head_dim // 2
    inv_freq = base ** (-torch.arange(half, dtype=torch.float64, device=device) / half)
    angle = torch.arange(T, dtype=torch.float64, device=device)[:, None] * inv_freq[None, :]  # (T, D/2)
    return angle.cos().float(), angle.sin().float()


def rope(x, cos, sin):
    """x: (B, T, H, D); rotates the pairs (i, i + D/2) the way nanowhale's rope_forward does."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, D/2), broadcast over batch and heads
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def attention(q, k, v, window):
    """q: (B, T, H, D), k and v: (B, T, KVH, D); causal, optionally limited to the last `window` keys."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, D)
    if k.size(1) != q.size(1):  # GQA: query head h reads kv head h // (H / KVH)
        k = k.repeat_interleave(q.size(1) // k.size(1), dim=1)
        v = v.repeat_interleave(q.size(1) // v.size(1), dim=1)
    if window > 0:
        t = torch.arange(q.size(2), device=q.device)
        dist = t[:, None] - t[None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=(dist >= 0) & (dist < window))
    else:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2)  # (B, T, H, D)


def mlp(x, w_in, w_out, kind):
    return activation(x @ w_in.T, kind) @ w_out.T


def route(x, router, bias, c):
    """Sigmoid router in fp32 (even under autocast), top-k of scores + bias, renormalised gates.
    Returns the chosen experts (N, K) and their gate weights (N, K)."""
    with torch.autocast(x.device.type, enabled=False):
        scores = torch.sigmoid(x.float() @ router.float().T)          # (N, E)
    topk = torch.topk(scores + bias, c["top_k"], dim=-1).indices      # (N, K), bias picks, never weighs
    gates = scores.gather(1, topk)
    return topk, gates / gates.sum(-1, keepdim=True) * c["route_scale"]


def experts_loop(x, topk, gates, w_in, w_out, c):
    """One matmul pair per expert over its contiguous rows; the counts come to the host."""
    K, E = c["top_k"], c["n_experts"]
    flat = topk.flatten()
    order = flat.argsort()                                            # slots sorted by expert
    token_of_row = order // K
    counts = torch.bincount(flat, minlength=E).tolist()
    xe = x.index_select(0, token_of_row)                              # (N*K, C)
    ye = torch.cat([mlp(chunk, w_in[e], w_out[e], c["activation"])
                    for e, chunk in enumerate(xe.split(counts))])     # (N*K, C)
    ye = ye * gates.flatten()[order, None]
    return torch.zeros_like(x).index_add_(0, token_of_row, ye.to(x.dtype))


def experts_grouped(x, topk, gates, w_in, w_out, c):
    """All experts in one torch._grouped_mm per projection (bf16 in, bf16 out); per-expert row ranges
    come from device-side counts (no host sync, static shapes for torch.compile)."""
    K, E = c["top_k"], c["n_experts"]
    N = x.size(0)
    flat = topk.flatten()                                             # (N*K,) expert of each slot
    order = flat.argsort(stable=True)                                 # slots sorted by expert
    counts = torch.zeros(E, dtype=torch.int64, device=x.device).scatter_add_(0, flat, torch.ones_like(flat))
    offs = counts.cumsum(0).to(torch.int32)                           # end row of each expert
    xe = x.to(torch.bfloat16).index_select(0, order // K)             # (N*K, C)
    h = torch._grouped_mm(xe, w_in.to(torch.bfloat16).mT, offs=offs)  # (N*K, Hin)
    # Autocast runs some activations in fp32 (relu2's square is a pow), and _grouped_mm does not
    # autocast: its operands must both be bf16.
    h = activation(h, c["activation"]).to(torch.bfloat16)
    ye = torch._grouped_mm(h, w_out.to(torch.bfloat16).mT, offs=offs)  # (N*K, C)
    slot_row = torch.empty_like(order).scatter_(0, order, torch.arange(N * K, device=x.device))
    y = ye.index_select(0, slot_row).view(N, K, -1)                   # each token's k rows, in slot order
    return (y * gates.to(y.dtype)[..., None]).sum(1).to(x.dtype)


MOE_IMPLS = {"loop": experts_loop, "grouped": experts_grouped}


def moe(x, p, name, c, bias, moe_impl="loop"):
    """x: (N, C). Routed experts plus the shared expert(s). The sequence-wise balance loss
    (alpha ~1e-4, a few element-wise ops on (N, E)) is left out: it is negligible work."""
    topk, gates = route(x, p[name + "router"], bias, c)
    out = MOE_IMPLS[moe_impl](x, topk, gates, p[name + "experts.w_in"], p[name + "experts.w_out"], c)
    for s in range(c["n_shared"]):
        out = out + mlp(x, p[name + "shared.w_in"][s], p[name + "shared.w_out"][s], c["activation"])
    return out


def torch_forward(p, buffers, c, tokens, targets, moe_impl="loop"):
    """Mean cross-entropy of the soft-capped logits; tokens and targets (B, T) int64."""
    B, T = tokens.shape
    H, KVH, D, eps = c["n_head"], c["n_kv_head"], c["head_dim"], c["norm_eps"]
    cos, sin = rope_tables(T, D, c["rope_base"], tokens.device)
    x = p["embed"][tokens]  # (B, T, C)
    for l in range(c["n_layer"]):
        name = f"layers.{l}."
        h = rms_norm(x, p[name + "attn_norm"], eps)
        q = rms_norm((h @ p[name + "attn.wq"].T).view(B, T, H, D), None, eps)  # QK-norm: no gain
        k = rms_norm((h @ p[name + "attn.wk"].T).view(B, T, KVH, D), None, eps)
        v = (h @ p[name + "attn.wv"].T).view(B, T, KVH, D)
        pattern = c["window_pattern"]
        window = c["short_window"] if pattern[l % len(pattern)] == "S" else 0
        y = attention(rope(q, cos, sin), rope(k, cos, sin), v, window)
        x = x + y.reshape(B, T, H * D) @ p[name + "attn.wo"].T
        h = rms_norm(x, p[name + "mlp_norm"], eps)
        if l < c["n_dense_layers"]:
            x = x + mlp(h, p[name + "mlp.w_in"], p[name + "mlp.w_out"], c["activation"])
        else:
            x = x + moe(h.reshape(B * T, -1), p, name + "moe.", c, buffers[name + "moe.bias"],
                        moe_impl).view(B, T, -1)
    x = rms_norm(x, p["final_norm"], eps)
    logits = x @ p["embed" if c["tie_embeddings"] else "head"].T  # (B, T, V)
    if c["softcap"] > 0:
        logits = c["softcap"] * torch.tanh(logits / c["softcap"])
    return F.cross_entropy(logits.view(B * T, -1).float(), targets.view(-1), ignore_index=-1)


class TorchMuon:
    """Muon as nanowhale runs it on its hidden matrices: Nesterov momentum, 5 quintic Newton-Schulz
    iterations per matrix, LR scaled by sqrt(max(1, rows/cols)); a 3-D param is a batch of matrices."""

    def __init__(self, params, lr=0.02, momentum=0.95, ns_steps=5):
        self.params, self.lr, self.momentum, self.ns_steps = list(params), lr, momentum, ns_steps
        self.buffers = [torch.zeros_like(p) for p in self.params]

    def orthogonalize(self, g):
        a, b, c = 3.4445, -4.7750, 2.0315
        tall = g.size(-2) > g.size(-1)
        X = g.mT if tall else g
        X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
        for _ in range(self.ns_steps):
            A = X @ X.mT
            X = a * X + (b * A + c * A @ A) @ X
        return X.mT if tall else X

    def step(self):
        with torch.no_grad():
            for p, buf in zip(self.params, self.buffers):
                buf.mul_(self.momentum).add_(p.grad)
                update = self.orthogonalize(p.grad + self.momentum * buf)
                p.add_(update, alpha=-self.lr * math.sqrt(max(1.0, p.size(-2) / p.size(-1))))

    def zero_grad(self, set_to_none=False):
        for p in self.params:
            p.grad.zero_()


def grouped_mm_status(device):
    """(usable, reason): whether torch._grouped_mm exists here and runs forward and backward in bf16 on
    `device` with transposed weights and an expert that gets no rows, and agrees with a plain loop."""
    if not hasattr(torch, "_grouped_mm"):
        return False, f"torch {torch.__version__} has no torch._grouped_mm"
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(40, 64, generator=g).to(device, torch.bfloat16).requires_grad_()
        w = torch.randn(3, 32, 64, generator=g).to(device, torch.bfloat16).requires_grad_()  # (E, out, in)
        offs = torch.tensor([16, 16, 40], dtype=torch.int32, device=device)  # expert 1 gets no rows
        y = torch._grouped_mm(x, w.mT, offs=offs)
        (y.float() * torch.linspace(-1, 1, 32, device=device)).sum().backward()
        ref = torch.cat([x[:16].float() @ w[0].float().T, x[16:].float() @ w[2].float().T])
        err = (y.float() - ref).abs().max().item()
        if not err < 0.1 or w.grad is None or not torch.isfinite(w.grad.float()).all():
            return False, f"torch._grouped_mm gave a wrong result on {device} (max err {err})"
    except Exception as e:  # noqa: BLE001 - any failure means: use the loop
        return False, f"torch._grouped_mm failed on {device}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return True, "torch._grouped_mm(bf16) works here"
