"""Run directories (trainer.py writes them) as tables: the per-step and per-eval records of metrics.jsonl,
the per-layer expert load, bias and balance of each logged step, the op profile, the summary.

    run = load_run("runs/exp1")          # or newest_run() under ./runs (or ../runs, from notebooks/)
    run.steps["loss"], run.evals["val_bpb"], run.expert_load.shape   # (logged steps, MoE layers, experts)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nanowhale.analysis.table import Table

# Columns of Run.steps, in this order: the trainer's per-step keys (a key a run lacks is NaN) and the
# derived ones (flops = tokens * FLOPs per token, wall_seconds). epoch: tokens consumed / tokens in the split.
STEP_KEYS = ("step", "tokens", "loss", "balance_loss", "lr_mult", "muon_lr", "muon_momentum", "balance_gamma",
             "grad_norm", "tok_per_s", "gflops", "mfu", "step_seconds", "compute_seconds", "progress",
             "train_seconds", "epoch", "data_seen")
EVAL_KEYS = ("step", "val_bpb", "val_loss", "val_tokens", "seconds")


@dataclass
class Run:
    dir: Path
    config: dict
    steps: Table                 # one row per logged step (STEP_KEYS + flops, wall_seconds)
    evals: Table                 # one row per eval: step, tokens, flops, wall_seconds, val_bpb, ...
    events: list[dict]           # start, resume, samples, op_profile, diverged, end (as logged)
    moe_layers: list[int]        # model layer index of each MoE layer
    expert_steps: np.ndarray     # (S,) the logged steps with expert records (S of them)
    expert_load: np.ndarray      # (S, MoE layers, experts) tokens per expert in that step
    expert_bias: np.ndarray      # (S, MoE layers, experts) balance bias after that step (NaN: not logged)
    max_violation: np.ndarray    # (S, MoE layers) (max load - mean) / mean
    dead_experts: np.ndarray     # (S, MoE layers) experts that got no token
    checkpoints: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.dir.name

    def event(self, kind: str) -> dict | None:
        """The last event of this kind ("end", "op_profile", "samples", ...), or None."""
        found = [e for e in self.events if e.get("event") == kind]
        return found[-1] if found else None

    @property
    def summary(self) -> dict | None:
        return self.event("end")

    def op_profile(self) -> Table | None:
        """Seconds and calls per op of the profiled step, slowest first (None: the run profiled none)."""
        ev = self.event("op_profile")
        if ev is None:
            return None
        names = list(ev["ops"])
        sec = np.array([ev["ops"][n]["seconds"] for n in names], dtype=float)
        t = Table({"op": np.array(names, dtype=object), "seconds": sec,
                   "calls": np.array([ev["ops"][n]["calls"] for n in names], dtype=np.int64),
                   "fraction": sec / sec.sum() if sec.sum() > 0 else sec})
        return t.sort("seconds", descending=True)


def read_records(path: Path) -> list[dict]:
    """The JSON objects of a metrics.jsonl (a half-written last line, from a run in progress, is skipped)."""
    records = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # the last line of a run in progress may be half written
                continue
            raise ValueError(f"{path}: line {i} is not JSON") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: line {i} is not a JSON object")
        records.append(rec)
    return records


def _expert_arrays(steps: list[dict], path: Path):
    """The per-layer expert records of the steps that log the load (post-training stages log only the balance)."""
    steps = [r for r in steps if r.get("experts") and all("load" in e for e in r["experts"])]
    layers = [e["layer"] for e in steps[0]["experts"]] if steps else []
    S, M = len(steps), len(layers)
    E = len(steps[0]["experts"][0]["load"]) if M else 0
    load = np.zeros((S, M, E), dtype=np.int64)
    bias = np.full((S, M, E), np.nan)
    viol = np.zeros((S, M))
    dead = np.zeros((S, M), dtype=np.int64)
    for s, rec in enumerate(steps):
        ex = rec["experts"]
        if [e["layer"] for e in ex] != layers or any(len(e["load"]) != E for e in ex):
            raise ValueError(f"{path}: step {rec['step']} has expert records of another shape than the first step")
        for m, e in enumerate(ex):
            load[s, m] = e["load"]
            viol[s, m], dead[s, m] = e["max_violation"], e["dead"]
            if "bias" in e:
                bias[s, m] = e["bias"]
    return np.array([r["step"] for r in steps], dtype=np.int64), layers, load, bias, viol, dead


def load_run(path: str | Path) -> Run:
    """Reads RUN/metrics.jsonl (and config.json, the checkpoint list). Works on a run still in progress."""
    d = Path(path)
    metrics = d / "metrics.jsonl"
    if not metrics.exists():
        raise ValueError(f"{d} is not a run directory: it has no metrics.jsonl")
    records = read_records(metrics)
    config = json.loads((d / "config.json").read_text()) if (d / "config.json").exists() else {}
    steps = [r for r in records if "event" not in r]
    events = [r for r in records if "event" in r]
    evals = [r for r in events if r["event"] == "eval"]
    step_table = Table.from_records(steps, list(STEP_KEYS))
    # FLOPs per token, from what the trainer logged (achieved GFLOP/s over tokens/s)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = step_table["gflops"] * 1e9 / step_table["tok_per_s"]
    ratio = ratio[np.isfinite(ratio)]  # post-training stages log tokens/s but no GFLOP/s
    flops_tok = float(np.median(ratio)) if ratio.size else np.nan
    step_table.columns["flops"] = step_table["tokens"] * flops_tok
    # wall-clock seconds of the training steps so far; with run.log_every > 1 each logged step stands for the
    # unlogged ones before it (evals and checkpoints are not counted)
    gaps = np.diff(step_table["step"], prepend=0.0)
    step_table.columns["wall_seconds"] = np.cumsum(step_table["step_seconds"] * gaps)
    eval_table = Table.from_records(evals, list(EVAL_KEYS))
    # tokens, FLOPs and training seconds at each eval: those of the step record with the same step
    at = {int(s): i for i, s in enumerate(step_table["step"])}
    for key in ("tokens", "flops", "wall_seconds"):
        eval_table.columns[key] = np.array([step_table[key][at[int(s)]] if int(s) in at else np.nan
                                            for s in eval_table["step"]], dtype=float)
    expert_steps, layers, load, bias, viol, dead = _expert_arrays(steps, metrics)
    ck_dir = d / "checkpoints"
    checkpoints = sorted(p for p in ck_dir.glob("step_*") if p.is_dir()) if ck_dir.exists() else []
    return Run(d, config, step_table, eval_table, events, layers, expert_steps, load, bias, viol, dead, checkpoints)


def _search_roots(root: str | Path | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    env = os.environ.get("NANOWHALE_RUNS")
    if env:
        return [Path(env)]
    return [Path("runs"), Path("..") / "runs"]  # from the repo root, or from notebooks/


def list_runs(root: str | Path | None = None) -> list[Path]:
    """Run directories (with a metrics.jsonl) under root (default: $NANOWHALE_RUNS, ./runs, ../runs), oldest first."""
    for r in _search_roots(root):
        if r.is_dir():
            runs = [p for p in r.iterdir() if (p / "metrics.jsonl").exists()]
            if runs:
                return sorted(runs, key=lambda p: (p / "metrics.jsonl").stat().st_mtime)
    return []


def newest_run(root: str | Path | None = None) -> Path:
    """The run whose metrics.jsonl changed last (a run in progress counts)."""
    runs = list_runs(root)
    if not runs:
        where = ", ".join(str(r.resolve()) for r in _search_roots(root))
        raise ValueError(f"no run directories (with metrics.jsonl) under {where}; train one with `nanowhale train`")
    return runs[-1]


def load_runs(paths=None) -> list[Run]:
    """Runs by path (a str/Path or a list of them); None: the newest run, or [] when there is none yet."""
    if paths is None:
        found = list_runs()
        paths = found[-1:]
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    return [load_run(p) for p in paths]


def runs_table(runs: list[Run]) -> Table:
    """One row per run: its size, length and results (from the end-of-run summary, else the latest records)."""
    rows = []
    for run in runs:
        start, end = run.event("start") or run.event("resume") or {}, run.summary or {}
        last = {k: run.steps[k][-1] for k in run.steps.names} if len(run.steps) else {}
        val = run.evals["val_bpb"][-1] if len(run.evals) else None
        rows.append({"run": run.name, "status": end.get("status", "in progress"),
                     "params_total": start.get("params_total"), "params_active": start.get("params_active"),
                     "steps": last.get("step"), "tokens": last.get("tokens"), "val_bpb": end.get("val_bpb", val),
                     "tokens_per_second": end.get("tokens_per_second", last.get("tok_per_s")),
                     "mfu": end.get("mfu", last.get("mfu")), "device": start.get("device")})
    names = ["run", "status", "params_total", "params_active", "steps", "tokens", "val_bpb", "tokens_per_second",
             "mfu", "device"]
    return Table.from_records(rows, names)


def task_table(runs: list[Run]) -> Table | str:
    """Benchmark results (`nanowhale eval --task`, RUN/eval_tasks.json): a row per run, checkpoint step and
    task with its primary accuracy, standard error, chance level and size; a message when there are none."""
    from nanowhale.tasks.runner import RESULTS_FILE

    rows = []
    for run in runs:
        path = run.dir / RESULTS_FILE
        if not path.exists():
            continue
        try:
            entries = json.loads(path.read_text())["checkpoints"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}: not an eval_tasks.json file ({e})") from None
        for step, entry in sorted(entries.items(), key=lambda kv: int(kv[0])):
            for name, r in entry["tasks"].items():
                rows.append({"run": run.name, "step": int(step), "task": name, "metric": r["primary"],
                             "value": r[r["primary"]], "stderr": r.get(r["primary"] + "_stderr"),
                             "chance": r.get("chance"), "n": r.get("n"), "shots": r.get("shots")})
    if not rows:
        return "no task evaluations yet: `nanowhale eval --ckpt RUN --task hellaswag,arc-easy,...` adds them"
    return Table.from_records(rows, ["run", "step", "task", "metric", "value", "stderr", "chance", "n", "shots"])


def load_model(run: Run | None):
    """nw.load of the run's latest checkpoint, or None (with a message) when it has none yet."""
    if run is None:
        return None
    if not run.checkpoints:
        print(f"{run.name}: no checkpoint yet (a run writes one at the end, or every run.checkpoint_every steps)")
        return None
    from nanowhale.loaded import load

    return load(run.dir, device="cpu")
