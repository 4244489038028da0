"""The research entry for post-training (agent_recipes/posttrain.md): one experiment is the pipeline that
research/experiment.toml describes, run from a fixed parent checkpoint and scored by a task's greedy reward.

    nanowhale research init TAG --entry nanowhale.research.posttrain:posttrain --metric val_reward \\
        --direction higher --budget tokens:3e6

research/experiment.toml (the agent's file):

    parent = "runs/base"            # the checkpoint every experiment starts from (never changes in a session)
    task = "arith:5"                # the score: greedy reward on this task's val split
    stages = ["sft", "rl"]          # run in order, each from the previous stage's checkpoint
    [sft]                           # any `nanowhale sft` setting (nanowhale/posttrain/settings.py) except the
    data = ["task:arith:5@2000"]    # ones the harness sets: seed, threads, device, logging and checkpoints
    steps = 60
    [rl]
    task = "arith:5"
    steps = 100

The score is measured here, not by the stages: `val_reward` is the greedy reward on the first EVAL_PROBLEMS
problems of the task's val split (answers of up to the task's `answer_tokens`); at promotion, `heldout_metric` is the same on its test split (scored
nowhere else). The budget counts tokens through the model, planned before anything runs, over all stages
(`planned_tokens`); a plan over budget is refused with the numbers, so more steps are never free. FLOP
budgets convert with the parent's FLOPs per token; time budgets are refused (a shared machine's clock is
not a fair budget for a multi-stage pipeline).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from nanowhale.config import load_toml, parse_override
from nanowhale.posttrain import settings as settings_mod

EVAL_PROBLEMS = 128
STAGES = {"sft": "SFTSettings", "dpo": "DPOSettings", "rl": "RLSettings"}
HARNESS_KEYS = ("seed", "threads", "device", "log_every", "checkpoint_every", "keep", "n_samples", "eval_every")


def read_experiment(path) -> dict:
    """The experiment config, checked: parent, task, stages and one settings table per stage."""
    exp = load_toml(path)
    unknown = sorted(set(exp) - {"parent", "task", "stages", *STAGES})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown} (known: parent, task, stages, {', '.join(STAGES)})")
    for key in ("parent", "task"):
        if not isinstance(exp.get(key), str) or not exp[key]:
            raise ValueError(f"{path}: `{key}` must be a non-empty string")
    stages = exp.get("stages")
    if not isinstance(stages, list) or not stages or any(s not in STAGES for s in stages):
        raise ValueError(f"{path}: `stages` must be a non-empty list of {', '.join(STAGES)}, got {stages!r}")
    for name in stages:
        table = exp.get(name, {})
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{name}] must be a table of settings")
        fixed = sorted(set(table) & set(HARNESS_KEYS))
        if fixed:
            raise ValueError(f"{path}: [{name}] sets {fixed}, which the harness controls; remove them")
        try:
            settings_mod.settings_from_dict(getattr(settings_mod, STAGES[name]), table)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: [{name}]: {e}") from None
    return exp


def planned_tokens(stage: str, s, seq_len: int, batch_tokens: int) -> int:
    """Tokens through the model that a stage's settings plan (an upper bound where lengths vary).
    sft: rows x (T+1); dpo: 2 sequences per pair, a forward for the log-probs and a forward+backward;
    rl: each sampled token once generated and once trained on (prompts not counted)."""
    if stage == "sft":
        if not s.steps:
            raise ValueError("[sft] steps: set a number of steps (one epoch's length depends on the data)")
        rows = s.batch_rows or max(1, batch_tokens // seq_len)
        return s.steps * rows * (seq_len + 1)
    if stage == "dpo":
        return s.steps * s.batch_pairs * 2 * (seq_len + 1) * 2
    return s.steps * s.prompts * s.group * s.max_new_tokens * 2


def _forced(spec: dict) -> dict:
    """The harness's forced keys (train.seed, train.threads, run.dir, ...) as a flat dict."""
    out = {}
    for item in spec.get("forced", []):
        for section, values in parse_override(item).items():
            for k, v in values.items():
                out[f"{section}.{k}"] = v
    return out


def posttrain(spec: dict) -> dict:
    """The harness entry: runs the stages, scores the result; the summary dict the harness reads."""
    from nanowhale.checkpoint import open_checkpoint
    from nanowhale.config import RunConfig
    from nanowhale.loaded import load
    from nanowhale.posttrain.rl import evaluate_task
    from nanowhale.posttrain.tasks import make_task

    exp = read_experiment(spec["experiment_config"])
    forced = _forced(spec)
    seed, threads = int(forced.get("train.seed", 0)), int(forced.get("train.threads", 0))
    run_root = Path(forced.get("run.dir", "research/runs/posttrain"))
    parent = open_checkpoint(exp["parent"])
    cfg = RunConfig.from_dict(parent.config)
    T = cfg.model["seq_len"]
    plans = []
    for name in exp["stages"]:
        cls = getattr(settings_mod, STAGES[name])
        s = settings_mod.settings_from_dict(cls, {**exp.get(name, {}), "seed": seed, "threads": threads,
                                                  "n_samples": 0, "keep": 1})
        plans.append((name, s, planned_tokens(name, s, T, cfg.train.batch_tokens)))
    total = sum(p[2] for p in plans)
    kind, amount = spec.get("budget_kind", "tokens"), float(spec.get("budget_amount", math.inf))
    if kind == "time":
        raise ValueError("post-training research needs a tokens: or flops: budget, not time:")
    allowed = amount if kind == "tokens" else amount / cfg.model_config().flops_per_token()
    if total > allowed:
        detail = ", ".join(f"{n} {t:,}" for n, _, t in plans)
        raise ValueError(f"the experiment plans {total:,} tokens ({detail}); the budget allows {allowed:,.0f}: "
                         "lower steps, batch sizes, group or max_new_tokens")

    import importlib

    ckpt, seconds, stages_out = exp["parent"], 0.0, {}
    for name, s, tokens in plans:
        out = getattr(importlib.import_module(f"nanowhale.posttrain.{name}"), name)(
            s, ckpt=ckpt, run_dir=run_root / name, log=lambda *a: None)
        ckpt, seconds = out["checkpoint"], seconds + out["seconds"]
        stages_out[name] = {k: v for k, v in out.items() if isinstance(v, (int, float, str)) or v is None}

    t0 = time.perf_counter()
    run = load(ckpt)
    task = make_task(exp["task"], 0, "val")
    val = evaluate_task(run.model, run.tokenizer, task, EVAL_PROBLEMS, task.answer_tokens)
    result = {"status": "done", "run_dir": str(run_root), "checkpoint": str(ckpt), "val_reward": val["reward"],
              "val_problems": val["problems"], "planned_tokens": total, "training_seconds": seconds,
              "step_tokens_per_second": total / seconds if seconds > 0 else 0.0, "stages": stages_out}
    if spec.get("heldout"):
        test = evaluate_task(run.model, run.tokenizer, make_task(exp["task"], 0, "test"), EVAL_PROBLEMS,
                             task.answer_tokens)
        result["heldout_metric"] = test["reward"]
    result["eval_seconds"] = time.perf_counter() - t0
    for name, _, _ in plans:  # the harness keeps logs and metrics, not weights
        shutil.rmtree(run_root / name / "checkpoints", ignore_errors=True)
    return result


__all__ = ["EVAL_PROBLEMS", "planned_tokens", "posttrain", "read_experiment"]
