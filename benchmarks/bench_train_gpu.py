"""GPU training throughput of nanowhale against the same model in PyTorch, MoE and an equal-size dense.

For each config (`moe`: the preset, default nanowhale-100m at sequence 2048; `dense`: every layer dense,
dense_hidden chosen so that active parameters match the MoE model's), trains a fresh model for --steps
timed steps after --warmup steps on random tokens, in nanowhale and then in PyTorch, and reports from
the median step: tokens/s, TFLOP/s (tokens/s * cfg.flops_per_token()), MFU against a bf16 dense-matmul
peak measured in the same run (8192^3 torch matmuls; fp32 1024^3 on --device cpu), peak device memory
and, when the engine exposes one, a per-op time breakdown. A step is forward + backward + optimizer
step + zero_grad, timed with time.perf_counter between device synchronisations; forward + backward is
also timed on its own, since the two sides' optimizers differ (nanowhale: Muon + AdamW; torch: fused
AdamW by default, --torch-optim muon for the same split).

PyTorch side: fp32 master weights copied from the nanowhale model (so the step-0 losses must agree),
bf16 autocast, torch.compile (--no-compile for eager), F.scaled_dot_product_attention, fp32 router, and
the experts as one torch._grouped_mm per projection when this torch has a working one (else a sorted
per-expert loop); the dispatch used is printed. Engines run one after the other (not interleaved as in
bench_train_cpu.py) so each one's memory can be measured alone.

    python -P benchmarks/bench_train_gpu.py                          # nanowhale-100m, moe and dense
    python -P benchmarks/bench_train_gpu.py --steps 30 --batch-size 8 --out benchmarks/RESULTS.md
    python -P benchmarks/bench_train_gpu.py --configs moe --no-compile --profile
    python -P benchmarks/bench_train_gpu.py --device cpu --preset tiny --seq-len 64 --batch-size 2 --steps 2
(`-P` keeps the source tree's nanowhale/ without _C from shadowing the installed module.)
"""

import argparse
import datetime
import gc
import os
import shlex
import statistics
import sys
import time

import numpy as np

import nanowhale as nw
from nanowhale.trainer import choose_cuda_graphs, choose_precision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling modules, also under python -P
from device_stats import DeviceMemory, TorchMemory, device_name, peak_matmul_flops, synchronize  # noqa: E402

try:
    import torch

    from torch_reference import TorchMuon, grouped_mm_status, torch_forward  # noqa: E402
except ImportError:
    torch = None

GOAL_MFU, GOAL_VS_TORCH, GOAL_DENSE_RATIO = 0.40, 1.3, 1.3


# ---------------------------------------------------------------------------------------------------
# Configs


def dense_equivalent(cfg, multiple=64):
    """cfg with every layer dense, dense_hidden (a multiple of `multiple`) chosen so that active
    parameters match cfg's. Active parameters are linear in dense_hidden: solve from two points."""
    def active(h):
        return cfg.replace(n_dense_layers=cfg.n_layer, dense_hidden=h).num_active_params()
    a, b = active(multiple), active(2 * multiple)
    hidden = multiple + (cfg.num_active_params() - a) * multiple / (b - a)
    return cfg.replace(n_dense_layers=cfg.n_layer, dense_hidden=max(multiple, round(hidden / multiple) * multiple))


def make_configs(names, preset, seq_len):
    moe = nw.ModelConfig.preset(preset)
    if seq_len is not None:
        moe = moe.replace(seq_len=seq_len)
    builders = {"moe": lambda: moe, "dense": lambda: dense_equivalent(moe)}
    return [(name, builders[name]()) for name in names]


def random_batches(cfg, B, n):
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(n):
        seq = rng.integers(0, cfg.vocab_size, size=(B, cfg.seq_len + 1), dtype=np.int32)
        batches.append((np.ascontiguousarray(seq[:, :-1]), np.ascontiguousarray(seq[:, 1:])))
    return batches


# ---------------------------------------------------------------------------------------------------
# Timing


def time_steps(step, batches, warmup, device, memory):
    """Runs step(tokens, targets) -> (loss, fwd_bwd_seconds) on every batch, synchronising the device
    around it. Returns the losses, and the (total, fwd_bwd) seconds of the steps after the warmup."""
    losses, totals, fwd_bwds = [], [], []
    for i, (tokens, targets) in enumerate(batches):
        synchronize(device)
        t0 = time.perf_counter()
        loss, fwd_bwd = step(tokens, targets)
        synchronize(device)
        total = time.perf_counter() - t0
        memory.sample()
        losses.append(loss)
        if i >= warmup:
            totals.append(total)
            fwd_bwds.append(fwd_bwd)
    return losses, totals, fwd_bwds


def timed_fwd_bwd(fn, device):
    """Wraps fn(tokens, targets) -> loss (float) to also return its seconds, device work included."""
    def run(tokens, targets):
        t0 = time.perf_counter()
        loss = fn(tokens, targets)
        synchronize(device)
        return loss, time.perf_counter() - t0
    return run


# ---------------------------------------------------------------------------------------------------
# nanowhale


def nanowhale_op_times(step, batch):
    """Per-op seconds of one more training step, from nanowhale's op profiler (which synchronises the
    device around every op, so it is run apart from the timed steps)."""
    nw.reset_op_times()
    nw.profile_ops(True)
    try:
        step(*batch)
    finally:
        nw.profile_ops(False)
    return {op: seconds for op, (seconds, _calls) in nw.op_times().items()}


def initial_weights(model):
    params = {n: np.array(model.get_param(n)) for n in model.parameter_names()}
    buffers = {n: np.array(model.get_buffer(n)) for n in model.buffer_names()}
    kinds = {n: model.parameter_kind(n) for n in model.parameter_names()}
    return params, buffers, kinds


def run_nanowhale(cfg, batches, args, want_weights, graphs):
    """Trains nanowhale on `batches`, its steps replayed as CUDA graphs or not; returns (result dict,
    initial weights or None). If the model cannot be built on the device, the result holds the error, and
    the weights come from a CPU model."""
    engine = "nanowhale eager" if not graphs and len(args.graph_modes) > 1 else "nanowhale"
    memory = DeviceMemory(args.device)
    memory.start()
    weights = None
    try:
        kw = {"dtype": args.nw_dtype} if args.nw_dtype else {}
        model = nw.Model(cfg, seed=0, device=args.device, **kw)
        model.precision = choose_precision(args.precision, args.device)
        model.cuda_graphs = graphs
    except Exception as e:  # noqa: BLE001 - e.g. a CPU-only build asked for cuda
        print(f"  {engine}: cannot build the model on {args.device}: {type(e).__name__}: {e}")
        if want_weights:
            weights = initial_weights(nw.Model(cfg, seed=0, device="cpu"))
        return dict(engine=engine, error=f"{type(e).__name__}: {str(e)[:120]}"), weights
    if want_weights:
        weights = initial_weights(model)
    opt = nw.Optimizer(model)  # Muon for the hidden matrices, AdamW for the rest

    def fwd_bwd(tokens, targets):  # the loss stays on the device until after the update, as in training
        model.forward_backward(tokens, targets, defer_loss=True)

    run = timed_fwd_bwd(fwd_bwd, args.device)

    def step(tokens, targets):
        _, fb = run(tokens, targets)
        opt.step()
        loss, _balance = model.take_loss_sums()
        model.zero_grad()
        return loss, fb

    try:
        losses, totals, fwd_bwds = time_steps(step, batches, args.warmup, args.device, memory)
    except Exception as e:  # noqa: BLE001 - report and carry on with the torch side
        print(f"  {engine}: training failed: {type(e).__name__}: {e}")
        return dict(engine=engine, error=f"{type(e).__name__}: {str(e)[:120]}"), weights
    launches = model.cuda_graph_stats()["replays"] + opt.cuda_graph_stats()["replays"]
    failure = model.cuda_graph_stats()["failure"] or opt.cuda_graph_stats()["failure"]
    graph_note = (f", CUDA graphs FAILED ({failure[:80]})" if failure
                  else f", CUDA graphs ({launches} launches)" if graphs else "")
    op_times = nanowhale_op_times(step, batches[-1]) if args.profile and graphs == args.graph_modes[0] else None
    result = dict(engine=engine, precision=f"{model.precision} matmuls, {model.dtype} weights{graph_note}",
                  losses=losses, totals=totals, fwd_bwds=fwd_bwds, mem=memory.peak_bytes(),
                  mem_how="mem_get_info delta", op_times=op_times)
    del opt, model
    gc.collect()
    return result, weights


# ---------------------------------------------------------------------------------------------------
# PyTorch


def torch_profile(step, batch, device, top=12):
    """{op: seconds} of one extra step under torch.profiler: the `top` ops by self device time (CPU time
    on --device cpu)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        step(*batch)
        synchronize(device)

    def self_us(e):
        if device == "cuda":
            return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        return e.self_cpu_time_total

    events = sorted(prof.key_averages(), key=self_us, reverse=True)[:top]
    return {e.key: self_us(e) / 1e6 for e in events if self_us(e) > 0}


def run_torch(cfg, weights, batches, args, moe_impl):
    """Trains the PyTorch model (starting from nanowhale's initial weights) on `batches`."""
    dev, c = args.device, cfg.to_dict()
    memory = TorchMemory(dev)
    memory.start()
    try:
        p = {n: torch.tensor(a, device=dev, requires_grad=True) for n, a in weights[0].items()}
        buffers = {n: torch.tensor(a, device=dev) for n, a in weights[1].items()}
        batches = [tuple(torch.from_numpy(a).long().to(dev) for a in b) for b in batches]
    except Exception as e:  # noqa: BLE001 - e.g. no usable device
        print(f"  torch: cannot place the model on {dev}: {type(e).__name__}: {str(e)[:300]}")
        return dict(engine="torch", error=f"{type(e).__name__}: {str(e)[:120]}")
    fused = dict(fused=True) if dev == "cuda" else {}
    if args.torch_optim == "adamw":
        opts = [torch.optim.AdamW(p.values(), lr=1e-3, betas=(0.8, 0.95), eps=1e-10, **fused)]
    else:  # "muon": the same split as nanowhale's optimizer
        matrices = [t for n, t in p.items() if weights[2][n] == "matrix"]
        others = [t for n, t in p.items() if weights[2][n] != "matrix"]
        opts = [TorchMuon(matrices), torch.optim.AdamW(others, lr=1e-3, betas=(0.8, 0.95), eps=1e-10, **fused)]

    def loss_fn(p, buffers, tokens, targets):
        with torch.autocast(dev, dtype=torch.bfloat16):
            return torch_forward(p, buffers, c, tokens, targets, moe_impl)

    state = {"fn": torch.compile(loss_fn, dynamic=False) if args.compile else loss_fn,
             "compiled": args.compile, "compile_s": None}

    def fwd_bwd(tokens, targets):
        if state["compiled"] and state["compile_s"] is None:  # first call: compiles; fall back on failure
            t0 = time.perf_counter()
            try:
                loss = state["fn"](p, buffers, tokens, targets)
                loss.backward()
                state["compile_s"] = time.perf_counter() - t0
                return loss.item()
            except Exception as e:  # noqa: BLE001
                print(f"  torch.compile failed, falling back to eager: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:300] if str(e) else ''}")
                state.update(fn=loss_fn, compiled=False)
                for t in p.values():
                    t.grad = None
        loss = state["fn"](p, buffers, tokens, targets)
        loss.backward()
        return loss.item()

    run = timed_fwd_bwd(fwd_bwd, dev)

    def step(tokens, targets):
        loss, fb = run(tokens, targets)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=False)
        return loss, fb

    try:
        losses, totals, fwd_bwds = time_steps(step, batches, args.warmup, dev, memory)
        op_times = torch_profile(step, batches[-1], dev) if args.profile else None
    except Exception as e:  # noqa: BLE001 - e.g. out of memory: report, keep the other rows
        print(f"  torch: training failed: {type(e).__name__}: {str(e)[:300]}")
        result = dict(engine="torch", error=f"{type(e).__name__}: {str(e)[:120]}")
    else:
        precision = ("bf16 autocast, " + ("compiled" if state["compiled"] else "eager")
                     + f", moe {moe_impl}" * (cfg.n_dense_layers < cfg.n_layer))
        result = dict(engine="torch", precision=precision, losses=losses, totals=totals, fwd_bwds=fwd_bwds,
                      mem=memory.peak_bytes(), mem_how="max_memory_allocated", op_times=op_times,
                      compile_s=state["compile_s"])
    del p, buffers, opts, state
    gc.collect()
    if dev == "cuda":
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------------------
# Report


def summarize(r, cfg, tokens_per_step, peak):
    if "error" in r:
        return r
    step_s, fb_s = statistics.median(r["totals"]), statistics.median(r["fwd_bwds"])
    tok_s = tokens_per_step / step_s
    flops = tok_s * cfg.flops_per_token()
    return dict(r, step_ms=1e3 * step_s, fb_ms=1e3 * fb_s, tok_s=tok_s, tflops=flops / 1e12,
                mfu=flops / peak if peak else None, loss0=r["losses"][0])


HEADER = ["config", "params total/active", "B x T", "engine", "precision", "step ms", "fwd+bwd ms", "tokens/s",
          "TFLOP/s", "MFU", "peak mem GiB (how)", "loss step 0"]


def table_row(name, cfg, B, r):
    head = [name, f"{cfg.num_params() / 1e6:.1f}M / {cfg.num_active_params() / 1e6:.1f}M", f"{B} x {cfg.seq_len}",
            r["engine"]]
    if "error" in r:
        return head + [f"failed: {r['error']}"] + ["-"] * (len(HEADER) - len(head) - 1)
    mem = "n/a" if r["mem"] is None else f"{r['mem'] / 2**30:.2f} ({r['mem_how']})"
    mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    return head + [r["precision"], f"{r['step_ms']:.1f}", f"{r['fb_ms']:.1f}", f"{r['tok_s']:,.0f}",
                   f"{r['tflops']:.2f}", mfu, mem, f"{r['loss0']:.4f}"]


def format_op_times(times):
    if not times:
        return ["    n/a"]
    total = sum(times.values())
    return [f"    {name[:60]:<60} {1e3 * t:9.3f} ms {100 * t / total:5.1f}%"
            for name, t in sorted(times.items(), key=lambda kv: -kv[1])]


def goal_lines(results):
    """The three goals, from results[(config, engine)] summaries."""
    def get(cfg, engine, key):
        r = results.get((cfg, engine))
        return None if r is None or "error" in r or r.get(key) is None else r[key]

    def verdict(value, ok, fmt):
        return "n/a" if value is None else f"{fmt.format(value)}  {'PASS' if ok(value) else 'FAIL'}"

    mfu = get("moe", "nanowhale", "mfu")
    nw_moe, th_moe, nw_dense = get("moe", "nanowhale", "tok_s"), get("moe", "torch", "tok_s"), get("dense", "nanowhale", "tok_s")
    vs_torch = nw_moe / th_moe if nw_moe and th_moe else None
    dense_ratio = nw_dense / nw_moe if nw_moe and nw_dense else None
    return [
        f"  MoE MFU (nanowhale)                              goal >= {100 * GOAL_MFU:.0f}%:  "
        + verdict(mfu, lambda v: v >= GOAL_MFU, "{:.1%}"),
        f"  MoE tokens/s nanowhale / torch                   goal >= {GOAL_VS_TORCH}x:  "
        + verdict(vs_torch, lambda v: v >= GOAL_VS_TORCH, "{:.2f}x"),
        f"  nanowhale dense / MoE tokens/s (equal active)    goal <= {GOAL_DENSE_RATIO}x:  "
        + verdict(dense_ratio, lambda v: v <= GOAL_DENSE_RATIO, "{:.2f}x"),
    ]


def append_markdown(path, command, info, lines):
    with open(path, "a") as f:
        f.write(f"\n## bench_train_gpu {datetime.datetime.now().isoformat(timespec='seconds')}\n\n")
        f.write(f"`{command}`\n\n")
        f.write("".join(f"- {k}: {v}\n" for k, v in info.items()) + "\n")
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="nanowhale-100m")
    ap.add_argument("--configs", default="moe,dense", help="comma-separated, from moe, dense")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--steps", type=int, default=20, help="timed steps, after the warmup")
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed first steps (torch.compile runs in the first, nanowhale captures its CUDA graphs "
                         "in the first three)")
    ap.add_argument("--batch-size", type=int, default=16, help="micro-batch rows")
    ap.add_argument("--seq-len", type=int, default=None, help="default: the preset's seq_len")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="PyTorch eager, no torch.compile")
    ap.add_argument("--torch-moe", choices=["auto", "grouped", "loop"], default="auto",
                    help="PyTorch expert dispatch: auto = torch._grouped_mm when it works here, else loop")
    ap.add_argument("--torch-optim", choices=["adamw", "muon"], default="adamw",
                    help="PyTorch optimizer: fused AdamW over all params, or Muon + AdamW like nanowhale")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="nanowhale train.precision (auto: bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--cuda-graph", choices=["auto", "on", "off", "both"], default="both",
                    help="nanowhale train.cuda_graph; both: a run with graphs and one without, side by side")
    ap.add_argument("--nw-dtype", default=None, help="nanowhale Model dtype (default: the model's default)")
    ap.add_argument("--profile", action="store_true",
                    help="per-op breakdown of one extra step (torch.profiler; nanowhale: nw.profile_ops)")
    ap.add_argument("--out", default=None, help="append a markdown block with the results to this file")
    args = ap.parse_args()
    names = args.configs.split(",")
    if unknown := [n for n in names if n not in ("moe", "dense")]:
        ap.error(f"unknown config(s) {', '.join(unknown)}; known: moe, dense")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    if args.cuda_graph == "both":
        args.graph_modes = [True, False] if args.device == "cuda" else [False]
    else:
        try:
            args.graph_modes = [choose_cuda_graphs(args.cuda_graph, args.device)]
        except ValueError as e:
            ap.error(str(e).replace("train.cuda_graph", "--cuda-graph").replace("train.device", "--device"))
    use_torch = torch is not None and not args.no_torch
    if args.device == "cuda" and (torch is None or not torch.cuda.is_available()):
        print("warning: torch sees no CUDA device: no synchronisation, peak or memory numbers")

    info = {"device": device_name(args.device),
            "torch": torch.__version__ if torch is not None else "not installed",
            "nanowhale": f"{nw.__version__} (cuda_available={nw.cuda_available()})"}
    if torch is None:
        peak, peak_label = None, "n/a (no torch)"
    elif args.device == "cuda" and not torch.cuda.is_available():
        peak, peak_label = None, "n/a (torch sees no CUDA device)"
    else:
        peak, peak_label = peak_matmul_flops(args.device)
    info["peak"] = f"{peak / 1e12:.1f} TFLOP/s ({peak_label})" if peak else peak_label
    moe_impl = args.torch_moe
    if use_torch:
        ok, why = grouped_mm_status(args.device)
        if moe_impl == "auto":
            moe_impl = "grouped" if ok else "loop"
        info["torch moe dispatch"] = f"{moe_impl} ({why})"
        info["torch"] += f", {'torch.compile' if args.compile else 'eager'}, optimizer {args.torch_optim}"
    else:
        info["torch moe dispatch"] = "skipped"
    info["timing"] = (f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warmup; medians; "
                      "step = fwd + bwd + optimizer step + zero_grad")
    for k, v in info.items():
        print(f"{k}: {v}")
    print()

    results, rows, op_lines = {}, [], []
    for name, cfg in make_configs(names, args.preset, args.seq_len):
        B = args.batch_size
        print(f"[{name}] {cfg.num_params() / 1e6:.1f}M params, {cfg.num_active_params() / 1e6:.1f}M active, "
              f"dense_hidden {cfg.dense_hidden} x {cfg.n_dense_layers} layers, {cfg.flops_per_token() / 1e6:.1f} "
              "MFLOP/token")
        batches = random_batches(cfg, B, args.warmup + args.steps)
        runs = []
        for i, graphs in enumerate(args.graph_modes):
            nw_r, w = run_nanowhale(cfg, batches, args, want_weights=use_torch and i == 0, graphs=graphs)
            weights = w if i == 0 else weights
            runs.append(nw_r)
        if use_torch:
            runs.append(run_torch(cfg, weights, batches, args, moe_impl))
        del weights
        for r in runs:
            s = summarize(r, cfg, B * cfg.seq_len, peak)
            results[(name, r["engine"])] = s
            rows.append(table_row(name, cfg, B, s))
            if "error" not in s:
                extra = f" (first step incl. torch.compile: {s['compile_s']:.1f} s)" if s.get("compile_s") else ""
                op_lines += [f"  {name} / {s['engine']}{extra}:"] + format_op_times(s["op_times"])
        print()

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "MFU = tokens/s * flops_per_token / measured peak; nanowhale precision: train.precision and the model's dtype.",
              "", "per-op times (one step):"] + op_lines
    lines += ["", "goals:"] + goal_lines(results)
    print("\n".join(lines))
    if args.out:
        command = "python -P " + shlex.join(sys.argv)
        append_markdown(args.out, command, info, lines)
        print(f"\nappended to {args.out}")


if __name__ == "__main__":
    main()
