"""Sampling throughput for RL: batched generation with a KV cache, nanowhale vs the same model in plain PyTorch.

One "group" = B rows sharing a prompt of Tp tokens, sampled for N new tokens at temperature 1 (what
`nanowhale rl` does per problem). nanowhale runs Model.generate (C++: prefill, then one decode step per
token over the KV cache, sampling in C++). The PyTorch side runs the same weights (copied from the
nanowhale model) through benchmarks/torch_reference.py's layers with its own KV cache: prefill, then one
token per step, torch.multinomial sampling, torch.set_num_threads equal to nanowhale's. Generated tokens/s
(B * N / seconds) is the median over --repeats runs, the engines taking turns. As a check that both compute
the same function, greedy decoding is run once on both and the number of leading tokens that agree is
printed.

    python benchmarks/bench_sampling.py                        # tiny, groups of 8 and 16, 64 new tokens
    python benchmarks/bench_sampling.py --ckpt runs/sft --groups 8 --new 48 --threads 2
    python benchmarks/bench_sampling.py --no-torch
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

import nanowhale as nw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # torch_reference, also under python -P
try:
    import torch

    from torch_reference import mlp, moe, rms_norm, rope, rope_tables
except ImportError:
    torch = None


def torch_generator(model):
    """A function (prompt (B, Tp) int, new, temperature, seed) -> (B, Tp + new) running the nanowhale model's
    weights in PyTorch with a KV cache."""
    cfgd = model.config.to_dict()
    p = {n: torch.from_numpy(np.ascontiguousarray(model.get_param(n))) for n in model.parameter_names()}
    buffers = {n: torch.from_numpy(np.ascontiguousarray(model.get_buffer(n))) for n in model.buffer_names()}
    H, KVH, D, eps = cfgd["n_head"], cfgd["n_kv_head"], cfgd["head_dim"], cfgd["norm_eps"]
    cos_all, sin_all = rope_tables(cfgd["seq_len"], D, cfgd["rope_base"])
    pattern = cfgd["window_pattern"]

    def forward(tokens, caches, pos):
        """tokens (B, T) at positions pos..pos+T-1; appends to caches; returns the last position's logits."""
        B, T = tokens.shape
        cos, sin = cos_all[pos:pos + T], sin_all[pos:pos + T]
        x = p["embed"][tokens]
        for layer in range(cfgd["n_layer"]):
            name = f"layers.{layer}."
            h = rms_norm(x, p[name + "attn_norm"], eps)
            q = rope(rms_norm((h @ p[name + "attn.wq"].T).view(B, T, H, D), None, eps), cos, sin)
            k = rope(rms_norm((h @ p[name + "attn.wk"].T).view(B, T, KVH, D), None, eps), cos, sin)
            v = (h @ p[name + "attn.wv"].T).view(B, T, KVH, D)
            ck, cv = caches[layer]
            ck[:, pos:pos + T], cv[:, pos:pos + T] = k, v
            keys, vals = ck[:, :pos + T].transpose(1, 2), cv[:, :pos + T].transpose(1, 2)  # (B, KVH, S, D)
            keys = keys.repeat_interleave(H // KVH, dim=1)
            vals = vals.repeat_interleave(H // KVH, dim=1)
            qpos = torch.arange(pos, pos + T)[:, None]
            kpos = torch.arange(pos + T)[None, :]
            window = cfgd["short_window"] if pattern[layer % len(pattern)] == "S" else 0
            allowed = (kpos <= qpos) & ((qpos - kpos < window) if window > 0 else True)
            y = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), keys, vals, attn_mask=allowed)
            x = x + y.transpose(1, 2).reshape(B, T, H * D) @ p[name + "attn.wo"].T
            h = rms_norm(x, p[name + "mlp_norm"], eps)
            if layer < cfgd["n_dense_layers"]:
                x = x + mlp(h, p[name + "mlp.w_in"], p[name + "mlp.w_out"], cfgd["activation"])
            else:
                x = x + moe(h.reshape(B * T, -1), p, name + "moe.", cfgd, buffers[name + "moe.bias"]).view(B, T, -1)
        x = rms_norm(x[:, -1], p["final_norm"], eps)
        logits = x @ p["embed" if cfgd["tie_embeddings"] else "head"].T
        return cfgd["softcap"] * torch.tanh(logits / cfgd["softcap"]) if cfgd["softcap"] > 0 else logits

    @torch.no_grad()
    def generate(prompt, new, temperature, seed):
        g = torch.Generator().manual_seed(seed)
        tokens = torch.from_numpy(prompt.astype(np.int64))
        B, Tp = tokens.shape
        caches = [(torch.zeros(B, Tp + new, KVH, D), torch.zeros(B, Tp + new, KVH, D)) for _ in range(cfgd["n_layer"])]
        out = [tokens]
        logits = forward(tokens, caches, 0)
        for i in range(new):
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g)
            out.append(nxt)
            if i + 1 < new:
                logits = forward(nxt, caches, Tp + i)
        return torch.cat(out, 1).numpy()

    return generate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", help="a checkpoint to load (default: a fresh tiny model)")
    ap.add_argument("--groups", default="8,16", help="rows per generation (comma-separated)")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new", type=int, default=64, help="tokens generated per row")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    if args.threads is not None:
        nw.set_num_threads(args.threads)
    threads = nw.get_num_threads()
    if args.ckpt:
        model = nw.load(args.ckpt, device="cpu").model
    else:
        model = nw.Model(nw.ModelConfig.preset("tiny"), seed=0)
    cfg = model.config
    use_torch = torch is not None and not args.no_torch
    if use_torch:
        torch.set_num_threads(threads)
        torch_gen = torch_generator(model)
    print(f"model {'tiny (fresh)' if not args.ckpt else args.ckpt}: {cfg.num_params() / 1e6:.2f}M params, "
          f"{cfg.num_active_params() / 1e6:.2f}M active; threads {threads}; prompt {args.prompt_len}, "
          f"{args.new} new tokens, temperature 1; medians of {args.repeats}; "
          + (f"torch {torch.__version__} eager fp32" if use_torch else
             "torch " + ("skipped" if torch is not None else "not installed")))
    rng = np.random.default_rng(0)
    prompt1 = rng.integers(0, cfg.vocab_size - 16, size=(1, args.prompt_len)).astype(np.int32)
    if use_torch:
        a = model.generate(np.repeat(prompt1, 2, 0), 16, temperature=0.0)
        b = torch_gen(np.repeat(prompt1, 2, 0), 16, 0.0, 0)
        agree = int(np.argmin(np.concatenate([(a[0, args.prompt_len:] == b[0, args.prompt_len:]), [False]])))
        print(f"greedy check: the first {agree} of 16 generated tokens agree")
    print("\n| rows | engine | ms per generation | generated tokens/s |")
    print("|---|---|---|---|")
    for B in [int(x) for x in args.groups.split(",")]:
        prompt = np.repeat(prompt1, B, 0)
        runs = {"nanowhale": lambda s: model.generate(prompt, args.new, temperature=1.0, seed=s)}
        if use_torch:
            runs["torch"] = lambda s: torch_gen(prompt, args.new, 1.0, s)
        times = {k: [] for k in runs}
        for r in range(args.repeats + 1):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn(r)
                if r:  # the first run warms up
                    times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"| {B} | {name} | {1e3 * med:.1f} | {B * args.new / med:,.0f} |")
        if use_torch:
            print(f"| {B} | nanowhale / torch | | {statistics.median(times['torch']) / statistics.median(times['nanowhale']):.2f}x |")


if __name__ == "__main__":
    main()
