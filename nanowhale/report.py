"""`nanowhale report RUN [RUN ...]`: one markdown table across a lineage (base -> SFT -> DPO -> RL).

Given one run, the lineage is found by following each post-training run's parent (RUN/posttrain.json:
{"stage", "parent": {"checkpoint", ...}}) back to the pretrained base; given several, they are the rows, in
that order. Per run: its stage, step, val_bpb (measured by `nanowhale eval --task` on the run's validation
shards, else the checkpoint's, else the last eval in metrics.jsonl), each task's primary accuracy ± standard
error from RUN/eval_tasks.json (the entry of the latest evaluated step), the chance-centred aggregate, and
the RL validation reward (the last `val_reward`).
"""

from __future__ import annotations

import json
from pathlib import Path

from nanowhale.checkpoint import open_checkpoint
from nanowhale.tasks import DEFAULT_TASKS
from nanowhale.tasks.command import HARNESS_RESULTS_FILE, run_dir_of
from nanowhale.tasks.runner import RESULTS_FILE, aggregate

POSTTRAIN_FILE = "posttrain.json"


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e.msg})") from None


def lineage(run: str | Path) -> list[Path]:
    """Run directories from the base to `run`, following posttrain.json parents."""
    chain: list[Path] = []
    current = run_dir_of(open_checkpoint(run).dir)
    while True:
        if current.resolve() in [c.resolve() for c in chain]:
            raise ValueError(f"{current}: its {POSTTRAIN_FILE} parents form a cycle")
        chain.append(current)
        pt = _read_json(current / POSTTRAIN_FILE)
        if not pt or not (pt.get("parent") or {}).get("checkpoint"):
            return chain[::-1]
        parent = Path(pt["parent"]["checkpoint"])
        if not parent.exists():
            raise ValueError(f"{current / POSTTRAIN_FILE}: parent checkpoint {parent} does not exist")
        current = run_dir_of(open_checkpoint(parent).dir)


def _last_metric(run_dir: Path, key: str) -> float | None:
    path = run_dir / "metrics.jsonl"
    value = None
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if isinstance(rec, dict) and rec.get(key) is not None:
                value = rec[key]
    return value


def run_row(run_dir: Path) -> dict:
    ck = open_checkpoint(run_dir)
    pt = _read_json(run_dir / POSTTRAIN_FILE) or {}
    evals = (_read_json(run_dir / RESULTS_FILE) or {}).get("checkpoints", {})
    entry = evals[max(evals, key=int)] if evals else {"tasks": {}}
    val_bpb = next((v for v in (entry.get("val_bpb"), ck.meta.get("val_bpb"), _last_metric(run_dir, "val_bpb"))
                    if v is not None), None)
    return {"run": run_dir.name, "stage": pt.get("stage", "base"), "step": ck.meta["step"], "val_bpb": val_bpb,
            "tasks": entry["tasks"], "eval_step": entry.get("step"), "reward": _last_metric(run_dir, "val_reward")}


def _cell(value, fmt="{:.4f}") -> str:
    return "—" if value is None else fmt.format(value)


def markdown_table(rows: list[dict]) -> str:
    names = [n for n in DEFAULT_TASKS if any(n in r["tasks"] for r in rows)]  # the usual order, then the others
    for r in rows:
        names += [n for n in r["tasks"] if n not in names]
    head = ["run", "stage", "step", "val_bpb"] + names + ["aggregate", "reward"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for r in rows:
        cells = [r["run"], r["stage"], str(r["step"]), _cell(r["val_bpb"])]
        for n in names:
            t = r["tasks"].get(n)
            err = None if t is None else t.get(t["primary"] + "_stderr")
            cells.append("—" if t is None else f"{t[t['primary']]:.3f}" + ("" if err is None else f" ± {err:.3f}"))
        cells += [_cell(aggregate(r["tasks"])), _cell(r["reward"], "{:.3f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


HARNESS_METRICS = ("acc", "acc_norm", "acc_bytes", "exact_match", "perplexity", "bits_per_byte", "word_perplexity")


def harness_table(dirs: list[Path]) -> str:
    """lm-evaluation-harness results (RUN/eval_harness.json, latest evaluated step): one row per run and task,
    each metric ± its standard error where the harness gives one; '' when no run has any."""
    rows = []
    for d in dirs:
        evals = (_read_json(d / HARNESS_RESULTS_FILE) or {}).get("checkpoints", {})
        if evals:
            entry = evals[max(evals, key=int)]
            rows += [(d.name, entry["step"], name, t) for name, t in entry["tasks"].items()]
    if not rows:
        return ""
    metrics = [m for m in HARNESS_METRICS if any(m in t for *_, t in rows)]
    lines = ["| run | step | harness task | n | " + " | ".join(metrics) + " |",
             "|---|---:|---|---:|" + "---:|" * len(metrics)]
    for run, step, name, t in rows:
        cells = []
        for m in metrics:
            err = t.get(m + "_stderr")
            cells.append("—" if m not in t else f"{t[m]:.3f}" + (f" ± {err:.3f}" if isinstance(err, float) else ""))
        lines.append(f"| {run} | {step} | {name} | {t.get('n', '—')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(runs: list[str | Path]) -> str:
    dirs = lineage(runs[0]) if len(runs) == 1 else [run_dir_of(open_checkpoint(r).dir) for r in runs]
    rows = [run_row(d) for d in dirs]
    note = ("Tasks: primary accuracy ± standard error (acc_norm for hellaswag, arc-challenge and piqa; acc "
            "otherwise); aggregate: mean chance-centred accuracy; reward: the RL run's last validation reward.")
    harness = harness_table(dirs)
    return markdown_table(rows) + "\n\n" + note + (f"\n\nlm-evaluation-harness:\n\n{harness}" if harness else "")


__all__ = ["lineage", "markdown_table", "report", "run_row"]
