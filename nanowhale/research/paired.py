"""Paired speed research (`research init --metric paired_tokens_per_second`): the candidate's training step
is timed side by side with the best commit's, so that machine drift over hours cancels.

The best commit lives in a persistent git worktree, research/best (git-ignored), moved when the best
changes, with its own CMake build directory (research/best/build/research, configured like the research
repo's build) so its extension rebuilds incrementally through build.rebuild. `measure` then runs the probe
(speed.py) as separate processes, best and candidate alternately, A B B A A B ... for K pairs, each process
importing its own tree's nanowhale; stats.decide_paired judges the per-pair log ratios.

Both probes resolve the same config: the rung's, with the best checkout's experiment config (the model a
speed change is timed on is the best's, so an edit to the experiment config cannot shrink the model).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from nanowhale.research import build as build_mod
from nanowhale.research import stats
from nanowhale.research.context import EXPERIMENT_CONFIG, Context
from nanowhale.research.gitops import Git
from nanowhale.research.worker import BOOTSTRAP

METRIC = "paired_tokens_per_second"
BEST_CHECKOUT = "research/best"
PROBE = "nanowhale.research.speed"
# The research build's cache entries the best checkout's build is configured with (the rest is derived).
CACHE_KEYS = ("CMAKE_GENERATOR", "CMAKE_MAKE_PROGRAM", "CMAKE_BUILD_TYPE", "CMAKE_CXX_COMPILER",
              "CMAKE_CUDA_COMPILER", "CMAKE_CUDA_ARCHITECTURES", "Python_EXECUTABLE", "pybind11_DIR")
LOG_TAIL_LINES = 40
TIME_MARGIN = 0.05  # time control: a would-be keep is discarded only when > 5% slower, beyond the pairs' noise


def _cache_entries(cache: Path) -> dict[str, str]:
    """{NAME:TYPE: VALUE} of CACHE_KEYS and NANOWHALE_* options in a CMakeCache.txt."""
    out = {}
    for line in cache.read_text().splitlines():
        key, eq, value = line.partition("=")
        name = key.split(":")[0]
        internal = key.endswith(":INTERNAL") and name != "CMAKE_GENERATOR"
        if eq and not internal and (name in CACHE_KEYS or name.startswith("NANOWHALE_")):
            out[key] = value
    return out


def checkout_build(research: build_mod.BuildSetup, tree: Path) -> build_mod.BuildSetup:
    """The best checkout's own build setup: an in-place module built in tree/build/research, configured
    (once) with the research build's generator, compilers and options."""
    if research.kind != "cmake":
        raise ValueError(f"paired speed research rebuilds the best commit, but this repository has no build "
                         f"directory ({research.note}); in it run: {build_mod.SWITCH_COMMAND}")
    build_dir = tree / "build" / "research"
    if not (build_dir / "CMakeCache.txt").exists():
        entries = _cache_entries(Path(research.build_dir) / "CMakeCache.txt")
        gen = [v for k, v in entries.items() if k.startswith("CMAKE_GENERATOR:")]
        cmd = ["cmake", "-S", str(tree), "-B", str(build_dir), *(["-G", gen[0]] if gen else []),
               *(f"-D{k}={v}" for k, v in entries.items() if not k.startswith("CMAKE_GENERATOR:"))]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise ValueError(f"configuring the best checkout's build failed: {' '.join(cmd)}\n"
                             f"{_tail(p.stdout + p.stderr)}")
    return build_mod.BuildSetup("cmake", str(build_dir), str(tree), "best checkout, in-place module")


def best_checkout(ctx: Context, log=print) -> Path:
    """research/best at the best commit, its extension rebuilt (only what changed since it last moved)."""
    tree = ctx.repo / BEST_CHECKOUT
    sha = ctx.best_commit()
    if not (tree / ".git").exists():
        ctx.git("worktree", "prune")
        ctx.git("worktree", "add", "-q", "--detach", str(tree), sha)
        log(f"best checkout {BEST_CHECKOUT} made at {sha[:10]}")
    git = Git(tree)
    if git.head() != sha:
        git("checkout", "-q", "--force", "--detach", sha)
        log(f"best checkout {BEST_CHECKOUT} moved to {sha[:10]}")
    res = build_mod.rebuild(checkout_build(ctx.build, tree))
    if not res.ok:
        raise ValueError(f"the best commit {sha[:10]} does not build in {tree}:\n{_tail(res.log)}")
    if res.rebuilt:
        log(f"rebuilt the best checkout's extension in {res.seconds:.1f} s")
    return tree


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


def probe(ctx: Context, tree: Path, spec_path: Path, out: Path) -> float:
    """One probe process importing `tree`'s nanowhale: its median step tokens/s (ValueError on a failure)."""
    env = dict(os.environ, NANOWHALE_RESEARCH_REPO=str(tree), NANOWHALE_RESEARCH_MAIN=PROBE, PYTHONUNBUFFERED="1")
    out.unlink(missing_ok=True)
    try:
        p = subprocess.run([sys.executable, "-c", BOOTSTRAP, str(spec_path), str(out)], cwd=tree, env=env,
                           capture_output=True, text=True, timeout=ctx.timeout())
    except subprocess.TimeoutExpired:
        raise ValueError(f"the probe of {tree} ran past {ctx.timeout():.0f} s") from None
    if p.returncode != 0 or not out.exists():
        raise ValueError(f"the probe of {tree} failed (exit {p.returncode}):\n{_tail(p.stdout + p.stderr)}")
    return float(json.loads(out.read_text())["tokens_per_second"])


def alternate(ctx: Context, runs: dict[str, tuple[Path, Path]], pairs: int, run_dir: Path, log=print) -> dict:
    """K pairs of probes of runs {"best": (tree, spec), "candidate": (tree, spec)}, in turn:
    {"best": [tokens/s, ...], "candidate": [...]} (ValueError naming the probe that failed)."""
    tps: dict[str, list[float]] = {"best": [], "candidate": []}
    order = ["best", "candidate"]
    for i in range(pairs):
        # A B, then B A: a drift that is linear over a pair of pairs, or a cost of going first, cancels
        for which in order if i % 2 == 0 else order[::-1]:
            tree, spec_path = runs[which]
            tps[which].append(probe(ctx, tree, spec_path, run_dir / f"{which}-{i}.json"))
        log(f"  pair {i}: best {tps['best'][-1]:,.0f} tok/s, candidate {tps['candidate'][-1]:,.0f} tok/s")
    return tps


def _write_spec(ctx: Context, run_dir: Path, name: str, experiment: dict | None = None,
                experiment_config: Path | None = None) -> Path:
    spec = ctx.spec(run_dir, seed=0, experiment_config=experiment_config)
    if experiment is not None:
        spec["experiment"] = experiment
    spec["probe_steps"] = int(ctx.s["probe_steps"])
    path = run_dir / f"{name}.spec.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


def measure(ctx: Context, name: str, log=print) -> dict:
    """K pairs of probes, best and candidate in turn; the ledger fields of the experiment (verdict included)."""
    best_tree = best_checkout(ctx, log)
    run_dir = ctx.run_dir(name)
    spec_path = _write_spec(ctx, run_dir, "probe", experiment_config=best_tree / EXPERIMENT_CONFIG)
    try:
        tps = alternate(ctx, {"best": (best_tree, spec_path), "candidate": (ctx.repo, spec_path)},
                        int(ctx.s["pairs"]), run_dir, log)
    except ValueError as e:
        return {"status": "crash", "verdict": "crash", "reason": str(e).splitlines()[0], "log_tail": str(e),
                "metric_values": [], "best_values": []}
    best, cand = tps["best"], tps["candidate"]
    d = stats.decide_paired(best, cand, ctx.s["k"], ctx.s["throughput_floor"])
    return {"status": "done", "verdict": d.verdict, "reason": d.reason, "margin": d.margin,
            "throughput_margin": d.throughput_margin, "metric_values": cand, "best_values": best,
            "paired_ratio": math.exp(d.gain), "best_metric": sum(best) / len(best),
            "best_throughput": sum(best) / len(best)}


def time_control(ctx: Context, name: str, code_changed: bool, log=print) -> dict:
    """Is the candidate (the working tree, its own experiment config) slower than the best (HEAD's code and
    experiment config)? Both steps probed alternately, `pairs` times; a config-only change is probed in the
    working tree itself (same code), a code change against the best checkout. The ledger's time_* fields:
    time_verdict faster | inconclusive | slower, the pairs, the ratio and the reason."""
    run_dir = ctx.run_dir(name)
    best_tree = best_checkout(ctx, log) if code_changed else ctx.repo
    head_config = ctx.git("show", f"HEAD:{EXPERIMENT_CONFIG}", check=False)
    from nanowhale.config import tomllib

    runs = {"best": (best_tree, _write_spec(ctx, run_dir, "best", experiment=tomllib.loads(head_config))),
            "candidate": (ctx.repo, _write_spec(ctx, run_dir, "candidate", experiment_config=ctx.repo / EXPERIMENT_CONFIG))}
    tps = alternate(ctx, runs, int(ctx.s["pairs"]), run_dir, log)
    d = stats.decide_paired(tps["best"], tps["candidate"], ctx.s["k"], ctx.s["throughput_floor"],
                            float(ctx.s.get("time_margin", TIME_MARGIN)))
    verdict = {"keep": "faster", "discard": "slower"}.get(d.verdict, "inconclusive")
    return {"time_verdict": verdict, "time_best_values": tps["best"], "time_candidate_values": tps["candidate"],
            "time_ratio": math.exp(d.gain), "time_reason": d.reason}


__all__ = ["BEST_CHECKOUT", "METRIC", "TIME_MARGIN", "alternate", "best_checkout", "checkout_build", "measure", "probe",
           "time_control"]
