"""`nanowhale research check`: is the current model code still correct? Seconds, before a run is spent.

1. the whole model in float64 against central finite differences, every parameter tensor (a few entries
   each), on micro shapes with the experiment's architecture choices (activation, windows, tied
   embeddings, softcap, shared experts ...) — a C++ change with a wrong backward fails here;
2. determinism: the same seed twice, and 1 vs 2 threads, give the same float32 losses bit for bit.

Runs in a subprocess on the freshly rebuilt module (`main`); `--full` also runs the C++ and Python suites.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

EPS = 1e-5
ARCH_FIELDS = ("activation", "tie_embeddings", "softcap", "window_pattern", "route_scale", "rope_base",
               "norm_eps", "balance_alpha")


def micro_config(arch: dict | None = None):
    """Every code path of the model with few parameters: 2 MoE layers after a dense one, GQA, shared experts."""
    import nanowhale as nw

    c = dict(vocab_size=37, seq_len=16, d_model=16, n_layer=3, n_head=2, n_kv_head=1, head_dim=8, n_dense_layers=1,
             dense_hidden=24, n_experts=4, top_k=2, expert_hidden=8, n_shared=1, shared_hidden=8,
             window_pattern="SL", short_window=3, balance_alpha=0.05)
    for k in ARCH_FIELDS:
        if arch and k in arch:
            c[k] = arch[k]
    if arch and arch.get("n_shared", 1) == 0:
        c["n_shared"] = 0
    return nw.ModelConfig(**c)


def gradient_check(cfg, seed: int = 0, per_tensor: int = 3) -> list[str]:
    """Mismatches 'name[i]: analytic vs numeric' of d(loss + balance loss)/d(param), float64."""
    import nanowhale as nw

    rng = np.random.default_rng(seed)
    model = nw.Model(cfg, seed=seed, dtype="float64")
    for name in model.parameter_names():  # random values: zero-initialised projections would hide terms
        shape = model.get_param(name).shape
        scalar = model.parameter_kind(name) == "scalar"
        model.set_param(name, rng.normal(1.0 if scalar else 0.0, 1.0 if scalar else 0.4, size=shape))
    tokens = rng.integers(0, cfg.vocab_size, size=(2, 7))
    targets = rng.integers(0, cfg.vocab_size, size=(2, 7))
    targets[0, 0] = -1
    model.zero_grad()
    model.forward_backward(tokens, targets)

    def objective():
        return model.forward(tokens, targets) + model.last_balance_loss

    bad = []
    for name in model.parameter_names():
        param = model.get_param(name)
        grad = model.get_grad(name).reshape(-1)
        flat = param.reshape(-1)
        for idx in rng.choice(flat.size, size=min(per_tensor, flat.size), replace=False):
            orig = flat[idx]
            flat[idx] = orig + EPS
            model.set_param(name, param)
            up = objective()
            flat[idx] = orig - EPS
            model.set_param(name, param)
            down = objective()
            flat[idx] = orig
            model.set_param(name, param)
            numeric = (up - down) / (2 * EPS)
            if not abs(numeric - grad[idx]) <= 1e-6 + 1e-5 * abs(numeric):
                bad.append(f"{name}[{idx}]: analytic {grad[idx]:.8g} vs numeric {numeric:.8g}")
    return bad


def train_losses(cfg, threads: int, steps: int = 3) -> list[float]:
    import nanowhale as nw

    nw.set_num_threads(threads)
    model = nw.Model(cfg, seed=1)
    opt = nw.Optimizer(model)
    rng = np.random.default_rng(3)
    out = []
    for _ in range(steps):
        tokens = rng.integers(0, cfg.vocab_size, size=(4, cfg.seq_len))
        out.append(model.forward_backward(tokens, np.roll(tokens, -1, axis=1)))
        opt.step(lr_mult=1.0)
        model.zero_grad()
    return out


def main(argv: list[str]) -> int:
    """argv: [experiment config TOML or '']. Prints a key: value block; exit 1 when anything failed."""
    import nanowhale as nw
    from nanowhale.config import load_toml

    arch = load_toml(argv[0]).get("model", {}) if argv and argv[0] and Path(argv[0]).exists() else {}
    threads = nw.get_num_threads()
    failures = []
    configs = [("micro", micro_config())]
    if any(k in arch for k in ARCH_FIELDS + ("n_shared",)):
        configs.append(("micro+experiment", micro_config(arch)))
    checked = 0
    for label, cfg in configs:
        bad = gradient_check(cfg)
        checked += 1
        failures += [f"gradient ({label}) {b}" for b in bad[:5]]
    a, b = train_losses(configs[-1][1], 1), train_losses(configs[-1][1], 1)
    if a != b:
        failures.append(f"determinism: the same seed gave losses {a} then {b}")
    if threads > 1:
        c = train_losses(configs[-1][1], 2)
        if c != a:
            failures.append(f"determinism: 1 thread {a} vs 2 threads {c}")
    nw.set_num_threads(threads)
    print("---")
    print(f"gradient_check: {'FAILED' if any(f.startswith('gradient') for f in failures) else 'ok'} ({checked} config(s), float64)")
    print(f"determinism: {'FAILED' if any(f.startswith('determinism') for f in failures) else 'ok'}")
    for f in failures:
        print(f"failure: {f}")
    return 1 if failures else 0


def run_check(full: bool = False, path=".", log=print) -> int:
    """Rebuild, then the checks above in a subprocess; with full, the C++ (ctest) and Python (pytest) suites."""
    import os
    import time

    from nanowhale.research.build import rebuild
    from nanowhale.research.context import EXPERIMENT_CONFIG, Context
    from nanowhale.research.worker import BOOTSTRAP

    ctx = Context.open(path)
    t0 = time.perf_counter()
    b = rebuild(ctx.build)
    log(f"build: {'ok' if b.ok else 'FAILED'} ({'rebuilt' if b.rebuilt else 'nothing to rebuild'}, {b.seconds:.1f} s)")
    if not b.ok:
        log("\n".join(b.log.splitlines()[-40:]))
        log("---\ncheck: FAILED (the extension does not compile)")
        return 1
    env = dict(os.environ, NANOWHALE_RESEARCH_REPO=str(ctx.repo), NANOWHALE_RESEARCH_MAIN="nanowhale.research.check")
    p = subprocess.run([sys.executable, "-c", BOOTSTRAP, str(ctx.repo / EXPERIMENT_CONFIG)], cwd=ctx.repo, env=env,
                       capture_output=True, text=True)
    log((p.stdout + p.stderr).rstrip())
    ok = p.returncode == 0
    if full and ok:
        ok = _full_suites(ctx, log)
    log(f"check: {'ok' if ok else 'FAILED'}\ncheck_seconds: {time.perf_counter() - t0:.1f}")
    return 0 if ok else 1


def _full_suites(ctx, log) -> bool:
    tests = ctx.repo / "build" / "tests"
    steps = []
    if not (tests / "CMakeCache.txt").exists():
        steps.append(["cmake", "-S", str(ctx.repo), "-B", str(tests), "-DNANOWHALE_BUILD_TESTS=ON"]
                     + ([] if ctx.s["machine"].get("gpu") else ["-DNANOWHALE_CUDA=OFF"]))
    steps += [["cmake", "--build", str(tests), "-j", str(max(1, int(ctx.s["threads"])))],
              ["ctest", "--test-dir", str(tests), "--output-on-failure"],
              [sys.executable, "-m", "pytest", "-x", "-q", str(ctx.repo / "tests" / "python")]]
    for cmd in steps:
        p = subprocess.run(cmd, cwd=ctx.repo, capture_output=True, text=True)
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-15:])
        log(f"$ {' '.join(cmd)}\n{tail}")
        if p.returncode != 0:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
