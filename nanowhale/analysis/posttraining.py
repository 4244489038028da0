"""A post-training lineage (base -> SFT -> DPO -> RL, linked by RUN/posttrain.json parents; nanowhale.report)
as tables: the lineage report, each stage's logged metrics, and the same prompts answered by every stage.

    chain = lineage_runs("runs/rl1")            # [Run of the base, Run of the SFT run, ...]
    lineage_table(chain)                        # the `nanowhale report` rows
    stage_metrics(chain[1])                     # the numeric keys that stage logged (masked loss, rewards, ...)
    stage_samples(chain[1])                     # its replies at its first and last evaluation
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nanowhale.analysis.runs import Run, list_runs, load_run, read_records
from nanowhale.analysis.table import Table
from nanowhale.report import POSTTRAIN_FILE

NO_LINEAGE = "no lineage yet: post-train a run with `nanowhale sft --ckpt RUN ...` (README: Post-training)"
# Per-step keys that describe the optimizer, the clock or the data rather than what a stage learned.
BOOKKEEPING = {"step", "tokens", "lr_mult", "muon_lr", "muon_momentum", "balance_gamma", "tok_per_s", "gflops",
               "mfu", "step_seconds", "compute_seconds", "sample_seconds", "progress", "train_seconds", "epoch",
               "data_seen", "grad_norm", "balance_loss", "seconds", "val_tokens", "val_problems",
               "supervised_tokens", "k"}
# What each stage learned, shown first (nanowhale/posttrain: sft.py, dpo.py, rl.py); other keys follow.
FIRST = ("loss", "val_loss", "reward_accuracy", "val_reward_accuracy", "margin", "val_margin", "chosen_reward",
         "rejected_reward", "reward_mean", "pass_at_k", "val_reward", "kl")


def stage_of(run: Run) -> str:
    pt = run.dir / POSTTRAIN_FILE
    return json.loads(pt.read_text()).get("stage", "?") if pt.exists() else "base"


def newest_posttrained(root: str | Path | None = None) -> Path | None:
    """The newest run with a posttrain.json under the runs root (see analysis.runs.list_runs), or None."""
    found = [p for p in list_runs(root) if (p / POSTTRAIN_FILE).exists()]
    return found[-1] if found else None


def lineage_runs(run: str | Path | None = None) -> list[Run]:
    """The runs from the base to `run` (None: the newest post-trained run), [] with a message when none."""
    from nanowhale.report import lineage

    if run is None:
        run = newest_posttrained()
        if run is None:
            print(NO_LINEAGE)
            return []
    return [load_run(d) for d in lineage(run)]


def lineage_table(chain: list[Run]) -> Table | str:
    """`nanowhale report`'s rows: stage, step, val_bpb, each task's primary accuracy, aggregate, reward."""
    if not chain:
        return NO_LINEAGE
    from nanowhale.report import run_row
    from nanowhale.tasks.runner import aggregate

    rows = [run_row(r.dir) for r in chain]
    tasks = []
    for r in rows:
        tasks += [n for n in r["tasks"] if n not in tasks]
    flat = []
    for r in rows:
        d = {"run": r["run"], "stage": r["stage"], "step": r["step"], "val_bpb": r["val_bpb"]}
        for n in tasks:
            t = r["tasks"].get(n)
            d[n] = None if t is None else t[t["primary"]]
        d["aggregate"], d["reward"] = aggregate(r["tasks"]), r["reward"]
        flat.append(d)
    return Table.from_records(flat, ["run", "stage", "step", "val_bpb", *tasks, "aggregate", "reward"])


def stage_metrics(run: Run) -> Table:
    """Every numeric per-step and per-eval key the run logged, except bookkeeping (BOOKKEEPING), by step:
    the masked loss of SFT, DPO's reward accuracy and margins, RL's rewards and pass@k, ..."""
    records = [r for r in read_records(run.dir / "metrics.jsonl") if "step" in r and r.get("event") in (None, "eval")]
    keys = []
    for r in records:
        keys += [k for k, v in r.items() if k not in keys and k not in BOOKKEEPING and k != "event"
                 and isinstance(v, (int, float)) and not isinstance(v, bool)]
    keys.sort(key=lambda k: FIRST.index(k) if k in FIRST else len(FIRST))  # stable: the rest as logged
    steps = sorted({int(r["step"]) for r in records})
    at = {s: i for i, s in enumerate(steps)}
    cols = {"step": np.array(steps, dtype=float)}
    for k in keys:
        col = np.full(len(steps), np.nan)
        for r in records:
            if isinstance(r.get(k), (int, float)):
                col[at[int(r["step"])]] = r[k]
        cols[k] = col
    return Table(cols)


def stage_samples(run: Run) -> Table | str:
    """The replies the stage logged at its first and its last evaluation (the same held-out prompts)."""
    evals = [e for e in run.events if e.get("event") == "eval" and e.get("samples")]
    if not evals:
        return f"{run.name}: no samples logged (n_samples 0, or no evaluation yet)"
    first, last = evals[0], evals[-1]
    n = min(len(first["samples"]), len(last["samples"]))
    cols = {"prompt": [s["prompt"] for s in first["samples"][:n]],
            f"step {first['step']}": [s["reply"] for s in first["samples"][:n]],
            f"step {last['step']}": [s["reply"] for s in last["samples"][:n]]}
    if all("gold" in s for s in last["samples"][:n]):
        cols["gold"] = [s["gold"] for s in last["samples"][:n]]
    return Table({k: np.array(v, dtype=object) for k, v in cols.items()})


def compare_samples(chain: list[Run], prompts: list[str], max_new_tokens: int = 48) -> Table | str:
    """Each stage's greedy reply (posttrain.sampling.answer) to the same user prompts, one column per stage."""
    if not chain:
        return NO_LINEAGE
    from nanowhale.conversation import render_for_completion
    from nanowhale.loaded import load
    from nanowhale.posttrain.sampling import answer

    cols = {"prompt": np.array(prompts, dtype=object)}
    for run in chain:
        if not run.checkpoints:
            continue
        m = load(run.dir, device="cpu")
        replies = []
        for p in prompts:
            msgs = [{"role": "user", "content": p}]
            room = m.model.config.seq_len - len(render_for_completion(m.tokenizer, msgs))
            replies.append(answer(m.model, m.tokenizer, msgs, min(max_new_tokens, room)) if room > 0
                           else "(the prompt fills the model's seq_len)")
        cols[f"{stage_of(run)}: {run.name}"] = np.array(replies, dtype=object)
    return Table(cols)
