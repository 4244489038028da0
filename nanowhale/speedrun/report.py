"""RUN/report.md, a speedrun's report card, written from what the stages left in their run directories:
the plan, the lineage table (`nanowhale report`), per stage its directory, parent, steps, tokens, wall time
and cost, each stage's curves as figures (when matplotlib is installed), samples before and after each
stage, the config and where it came from; the last line says how to chat with the model or serve it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from nanowhale.speedrun.origin import Origin
from nanowhale.speedrun.plan import Plan

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
CELL_CHARS = 160


def _records(run_dir: Path) -> list[dict]:
    from nanowhale.analysis.runs import read_records

    path = run_dir / "metrics.jsonl"
    return read_records(path) if path.exists() else []


def _cell(text) -> str:
    s = str(text).replace("\n", " ⏎ ").replace("|", "\\|")
    return s if len(s) <= CELL_CHARS else s[:CELL_CHARS] + " …"


def stage_tokens(plan: Plan, stage: str, records: list[dict]) -> int | None:
    """Tokens a stage put through the model: training rows (pretrain, sft), chosen + rejected rows at seq_len
    (dpo, an upper bound), sampled completion tokens of the logged steps (rl)."""
    steps = [r for r in records if "event" not in r]
    if not steps:
        return None
    if stage == "pretrain":
        return steps[-1]["tokens"]
    settings = json.loads((plan.stage_dir(stage) / "posttrain.json").read_text())["settings"]
    T = plan.pretrain["model"]["seq_len"]
    if stage == "sft":
        return settings["batch_rows"] * T * steps[-1]["step"]
    if stage == "dpo":
        return 2 * settings["batch_pairs"] * T * steps[-1]["step"]
    return int(sum(r["mean_length"] * settings["prompts"] * settings["group"] for r in steps))


def _device(records: list[dict]) -> tuple[str, int]:
    start = next((r for r in records if r.get("event") in ("start", "resume")), {})
    return start.get("device", "cpu"), int(start.get("threads", 1))


def _stage_table(plan: Plan, stages: dict) -> list[str]:
    from nanowhale.config import RunConfig

    flops_tok = RunConfig.from_dict(plan.pretrain).model_config().flops_per_token()
    pre_device = _device(_records(plan.stage_dir("pretrain")))
    lines = ["| stage | run directory | parent | steps | tokens | wall time | budget | PFLOP | cost (USD) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    total_s = total_cost = 0.0
    for stage in plan.stages():
        rec = stages.get(stage, {})
        records = _records(plan.stage_dir(stage)) if stage in ("pretrain", "sft", "dpo", "rl") else []
        tokens = stage_tokens(plan, stage, records) if records else None
        device, threads = _device(records) if records else pre_device
        seconds = rec.get("seconds", 0.0)
        cost = seconds / 3600 * (plan.price["cuda"] if device == "cuda" else plan.price["cpu"] * threads)
        total_s += seconds
        total_cost += cost
        resumed = f" ({rec['sessions']} sessions)" if rec.get("sessions", 1) > 1 else ""
        budget = f"{plan.seconds[stage]:.0f} s" if stage in plan.seconds else "—"
        lines.append("| " + " | ".join([
            stage, f"`{rec.get('dir') or '—'}`", f"`{rec.get('parent') or '—'}`", str(rec.get("steps", "—")),
            f"{tokens:,}" if tokens is not None else (f"{rec['train_tokens']:,} (train split)"
                                                     if rec.get("train_tokens") else "—"),
            f"{seconds:.1f} s{resumed}", budget,
            f"{tokens * flops_tok / 1e15:.4f}" if tokens is not None else "—", f"{cost:.4f}"]) + " |")
    lines.append(f"| **total** | | | | | **{total_s:.1f} s** | {plan.budget_seconds:.0f} s | | **{total_cost:.4f}** |")
    lines.append("")
    lines.append(f"Tokens: training rows for pretraining and SFT, chosen + rejected rows at seq_len for DPO (an "
                 f"upper bound), sampled completion tokens for RL. PFLOP: tokens x {flops_tok:.3g} FLOPs per token "
                 f"(6 N_active + attention). Cost: wall time at ${plan.price['cpu']:g} per CPU core-hour or "
                 f"${plan.price['cuda']:g} per GPU-hour (nanowhale/speedrun/budgets.toml). Wall time of a stage "
                 "that was interrupted adds each session's time up to its last write.")
    return lines


def _figures(plan: Plan, run_dir: Path, draw: bool) -> list[str]:
    if not draw:
        return ["No figures: drawing them was turned off (--no-figures); rerun the same command without it to draw "
                "them (no stage is redone).", ""]
    try:
        from nanowhale.plots import loss_figure, posttraining_figure
    except ImportError as e:
        return [f"No figures: matplotlib is not installed ({e}); `pip install 'nanowhale[plot]'` and rerun the "
                "same command to draw them (no stage is redone).", ""]
    from nanowhale.analysis.runs import load_run

    out = run_dir / FIGURES_DIR
    out.mkdir(exist_ok=True)
    lines = []
    for stage in plan.model_stages():
        run = load_run(plan.stage_dir(stage))
        fig = loss_figure([run]) if stage == "pretrain" else posttraining_figure([run])
        fig.savefig(out / f"{stage}.png", dpi=80)
        what = "training loss and val_bpb" if stage == "pretrain" else "what it logged per step"
        lines += [f"**{stage}** ({what}):", "", f"![{stage}]({FIGURES_DIR}/{stage}.png)", ""]
    return lines


def _samples(plan: Plan) -> list[str]:
    lines = []
    for stage in plan.model_stages():
        d = plan.stage_dir(stage)
        records = _records(d)
        lines += [f"### {stage}", ""]
        if stage == "pretrain":
            before_file = d / "samples_before.json"
            before = json.loads(before_file.read_text()) if before_file.exists() else []
            after = next((r["samples"] for r in reversed(records) if r.get("event") == "samples"), [])
            if not (before or after):
                lines += ["No samples (sample.n = 0).", ""]
                continue
            lines += ["| before (random initialisation) | after |", "|---|---|"]
            for i in range(max(len(before), len(after))):
                b = before[i] if i < len(before) else ""
                a = after[i] if i < len(after) else ""
                lines.append(f"| {_cell(b)} | {_cell(a)} |")
        else:
            evals = [r for r in records if r.get("event") == "eval" and r.get("samples")]
            if not evals:
                lines += ["No samples (n_samples = 0).", ""]
                continue
            first, last = evals[0], evals[-1]
            gold = any("gold" in s for s in first["samples"])
            lines += [f"Held-out prompts, greedy replies at step {first['step']} (before) and step {last['step']} "
                      "(after).", "", "| prompt | before | after |" + (" gold |" if gold else ""),
                      "|---|---|---|" + ("---|" if gold else "")]
            for b, a in zip(first["samples"], last["samples"]):
                lines.append(f"| {_cell(b['prompt'])} | {_cell(b['reply'])} | {_cell(a['reply'])} |"
                             + (f" {_cell(b.get('gold', ''))} |" if gold else ""))
        lines.append("")
    return lines


def write_report(plan: Plan, stages: dict, figures: bool = True) -> Path:
    from nanowhale.config import to_toml
    from nanowhale.report import report as lineage_report

    run_dir = Path(plan.run_dir)
    final = plan.stage_dir(plan.model_stages()[-1])
    origin = Origin(**plan.origin)
    skipped = stages.get("eval", {}).get("skipped") or {}
    lines = [f"# nanowhale speedrun: {plan.scale}", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; run directory `{run_dir}`; budget "
             f"{plan.budget_seconds:.0f} s (the table's is calibrated on {plan.machine}).", "",
             "## Plan", "", "```text", plan.describe(), "```", "",
             "## Lineage", "", lineage_report([final]), ""]
    if skipped:
        lines += ["Tasks not evaluated: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()), ""]
    lines += ["## Stages", "", *_stage_table(plan, stages), "",
              "## Curves", "", *_figures(plan, run_dir, figures),
              "## Samples", "", *_samples(plan),
              "## Config and its origin", "",
              f"Pretraining settings: {origin.describe(plan.pretrain['preset'])}."
              + (f" Command-line changes: `--set {' '.join(plan.sets)}`." if plan.sets else ""), ""]
    if origin.kind == "research":
        lines += [f"Research branch `{origin.branch}`, commit `{origin.commit}` (\"{origin.subject}\"), "
                  f"repository `{origin.repo}`; the settings it kept:", "", "```toml",
                  to_toml(origin.settings).rstrip() or "# (none)", "```", ""]
    post = {s: getattr(plan, s) for s in ("sft", "dpo", "rl") if getattr(plan, s) is not None}
    lines += ["The pretraining config (`pretrain/config.toml`):", "", "```toml", to_toml(plan.pretrain).rstrip(),
              "```", "", "The post-training settings:", "", "```toml", to_toml(post).rstrip(), "```", "",
              f"Evaluation: {', '.join(plan.eval['tasks']) or 'no tasks'}, "
              f"{plan.eval['limit'] or 'all'} items each, on every stage's model.", "",
              f"Chat with it: `nanowhale chat --ckpt {final}` — or serve it: `nanowhale serve --ckpt {final}`"]
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


__all__ = ["REPORT_FILE", "stage_tokens", "write_report"]
