"""CPU training throughput of nanowhale, side by side with the same model in eager PyTorch.

For each config, trains a fresh model for --steps steps (after 2 warmup steps) on random tokens and
reports, from the median step time: tokens/s and achieved GFLOP/s (tokens/s * cfg.flops_per_token()).
A step is forward + backward + optimizer step + zero_grad, timed with time.perf_counter; the
forward+backward part is also timed on its own, since the two sides' optimizers differ (see below).

When torch is importable, the same model is rebuilt in plain eager PyTorch (fp32, same shapes, same
initial weights copied from the nanowhale model, same batches, torch.set_num_threads equal to
nanowhale's thread count) and timed in the same run, the two engines taking turns step by step; the
first-step losses of the two are printed as a check that both compute the same function.

    python benchmarks/bench_train_cpu.py                      # tiny and cpu-large, 10 steps each
    python benchmarks/bench_train_cpu.py --configs cpu-large --steps 20 --batch-size 8 --threads 2
    python benchmarks/bench_train_cpu.py --no-torch
    python benchmarks/bench_train_cpu.py --torch-optim muon     # torch also runs Muon on the matrices
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

    from torch_reference import TorchMuon, torch_forward
except ImportError:
    torch = None

WARMUP_STEPS = 2

CONFIGS = {
    "tiny": lambda: nw.ModelConfig.preset("tiny"),
    # About 4x tiny's active parameters; the shared expert is as wide as a routed one.
    "cpu-large": lambda: nw.ModelConfig(
        vocab_size=8192, seq_len=256, d_model=256, n_layer=4, n_head=4, n_kv_head=4, head_dim=64,
        n_dense_layers=1, dense_hidden=1024, n_experts=16, top_k=2, expert_hidden=256,
        n_shared=1, shared_hidden=256),
}


def time_steps(steps, batches):
    """Runs every step(tokens, targets) -> (loss, fwd_bwd_seconds) of `steps` on every batch, the engines
    taking turns batch by batch so that background load on the machine hits them alike. Returns, per
    engine, the losses and the per-step (total, fwd_bwd) seconds of the timed steps (after the warmup)."""
    results = [([], [], []) for _ in steps]
    for i, (tokens, targets) in enumerate(batches):
        for step, (losses, totals, fwd_bwds) in zip(steps, results):
            t0 = time.perf_counter()
            loss, fwd_bwd = step(tokens, targets)
            total = time.perf_counter() - t0
            losses.append(loss)
            if i >= WARMUP_STEPS:
                totals.append(total)
                fwd_bwds.append(fwd_bwd)
    return results


# ---------------------------------------------------------------------------------------------------
# nanowhale


def nanowhale_step_fn(cfg):
    model = nw.Model(cfg, seed=0)
    opt = nw.Optimizer(model)  # Muon for the hidden matrices, AdamW for the rest

    def step(tokens, targets):
        t0 = time.perf_counter()
        loss = model.forward_backward(tokens, targets)
        fwd_bwd = time.perf_counter() - t0
        opt.step()
        model.zero_grad()
        return loss, fwd_bwd

    return model, step


# ---------------------------------------------------------------------------------------------------
# The same model in eager PyTorch: benchmarks/torch_reference.py


def torch_step_fn(model, cfg, optim):
    """The nanowhale model's initial weights in torch tensors, and a train step over them."""
    c = cfg.to_dict()
    p = {n: torch.tensor(model.get_param(n), requires_grad=True) for n in model.parameter_names()}
    buffers = {n: torch.tensor(model.get_buffer(n)) for n in model.buffer_names()}
    if optim == "adamw":
        # A stand-in for nanowhale's Muon + AdamW: AdamW over all parameters. It does less work than
        # Muon (no Newton-Schulz matmuls), which favours torch; the fwd+bwd column is unaffected.
        opts = [torch.optim.AdamW(p.values(), lr=1e-3, betas=(0.8, 0.95), eps=1e-10)]
    else:  # "muon": the same split as nanowhale's optimizer
        matrices = [p[n] for n in p if model.parameter_kind(n) == "matrix"]
        others = [p[n] for n in p if model.parameter_kind(n) != "matrix"]
        opts = [TorchMuon(matrices), torch.optim.AdamW(others, lr=1e-3, betas=(0.8, 0.95), eps=1e-10)]

    def step(tokens, targets):
        t0 = time.perf_counter()
        loss = torch_forward(p, buffers, c, torch.from_numpy(tokens).long(), torch.from_numpy(targets).long())
        loss.backward()
        fwd_bwd = time.perf_counter() - t0
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=False)
        return loss.item(), fwd_bwd

    return step


# ---------------------------------------------------------------------------------------------------


def summarize(engine, cfg, tokens_per_step, losses, totals, fwd_bwds):
    step_s, fb_s = statistics.median(totals), statistics.median(fwd_bwds)
    tok_s = tokens_per_step / step_s
    return dict(engine=engine, step_ms=1e3 * step_s, fb_ms=1e3 * fb_s, tok_s=tok_s,
                gflops=tok_s * cfg.flops_per_token() / 1e9, loss0=losses[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="tiny,cpu-large", help=f"comma-separated, from {', '.join(CONFIGS)}")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warmup steps)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=None, help="default: the config's seq_len")
    ap.add_argument("--threads", type=int, default=None, help="default: nanowhale's default thread count")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--torch-optim", choices=["adamw", "muon"], default="adamw",
                    help="PyTorch optimizer: AdamW over all params (default), or Muon + AdamW like nanowhale")
    args = ap.parse_args()
    names = args.configs.split(",")
    if unknown := [n for n in names if n not in CONFIGS]:
        ap.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")

    if args.threads is not None:
        nw.set_num_threads(args.threads)
    threads = nw.get_num_threads()
    use_torch = torch is not None and not args.no_torch
    if use_torch:
        torch.set_num_threads(threads)
    print(f"threads {threads}, batch {args.batch_size}, {args.steps} timed steps after {WARMUP_STEPS} warmup; "
          + (f"torch {torch.__version__} (eager fp32, optimizer {args.torch_optim})" if use_torch
             else "torch " + ("skipped" if torch is not None else "not installed")))
    print("step = forward + backward + optimizer step + zero_grad; times and rates are medians over steps;\n"
          "the engines take turns step by step, so background load hits both alike\n")

    header = ["config", "params total/active", "B x T", "engine", "step ms", "fwd+bwd ms", "tokens/s", "GFLOP/s",
              "loss step 0"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    ratios = []
    for name in names:
        cfg = CONFIGS[name]()
        if args.seq_len is not None:
            cfg = cfg.replace(seq_len=args.seq_len)
        B, T = args.batch_size, cfg.seq_len
        rng = np.random.default_rng(0)
        batches = []
        for _ in range(WARMUP_STEPS + args.steps):
            seq = rng.integers(0, cfg.vocab_size, size=(B, T + 1), dtype=np.int32)
            batches.append((np.ascontiguousarray(seq[:, :-1]), np.ascontiguousarray(seq[:, 1:])))

        model, nw_step = nanowhale_step_fn(cfg)
        engines = {"nanowhale": nw_step}
        if use_torch:
            engines["torch"] = torch_step_fn(model, cfg, args.torch_optim)  # starts from the same weights
        results = time_steps(list(engines.values()), batches)
        rows = [summarize(engine, cfg, B * T, *r) for engine, r in zip(engines, results)]
        for r in rows:
            print(f"| {name} | {cfg.num_params() / 1e6:.2f}M / {cfg.num_active_params() / 1e6:.2f}M | {B} x {T} "
                  f"| {r['engine']} | {r['step_ms']:.1f} | {r['fb_ms']:.1f} | {r['tok_s']:,.0f} "
                  f"| {r['gflops']:.1f} | {r['loss0']:.4f} |")
        if use_torch:
            ratios.append((name, rows[1]["step_ms"] / rows[0]["step_ms"], rows[1]["fb_ms"] / rows[0]["fb_ms"]))
        del model, nw_step, engines

    if ratios:
        print("\nspeed ratio nanowhale / torch (>1: nanowhale faster)")
        for name, step_ratio, fb_ratio in ratios:
            print(f"  {name}: step {step_ratio:.2f}x, fwd+bwd {fb_ratio:.2f}x")


if __name__ == "__main__":
    main()
