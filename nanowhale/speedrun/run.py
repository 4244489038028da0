"""Runs a speedrun plan stage by stage, through each stage's own entry point, resumably.

    RUN/speedrun.json       the plan and each stage's record (status, directory, parent, checkpoint, seconds)
    RUN/data/               the prepared data when --data named raw documents (else the data is used in place)
    RUN/pretrain/           a `nanowhale train` run directory (+ samples_before.json: the untrained model's)
    RUN/sft/, dpo/, rl/     `nanowhale sft|dpo|rl` run directories; posttrain.json names each one's parent
    RUN/*/eval_tasks.json   the eval stage's task results for that stage's model (`nanowhale eval --task`)
    RUN/report.md           the report card (report.py), RUN/figures/ its figures

A stage recorded as done is never redone. A stage that was interrupted continues from its newest checkpoint
through the stage's own resume (bit-identical on CPU for the step-counted post-training stages), or starts
again when it had written none. The state file is replaced atomically after every change.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from nanowhale import checkpoint as ckpt_mod
from nanowhale.speedrun.plan import Plan, same_plan

STATE_FILE = "speedrun.json"


class State:
    """RUN/speedrun.json: the plan and the stages' records."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.path = Path(plan.run_dir) / STATE_FILE
        self.stages: dict[str, dict] = {}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            differ = same_plan(saved["plan"], plan)
            if differ:
                raise ValueError(f"{plan.run_dir} holds a speedrun with another plan (it differs in: "
                                 f"{', '.join(differ)}); rerun the command that started it to continue it, or "
                                 "give another --run-dir")
            self.stages = saved["stages"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ckpt_mod.write_text_atomic(self.path, json.dumps({"plan": self.plan.to_dict(), "stages": self.stages},
                                                         indent=1))

    def done(self, stage: str) -> bool:
        return self.stages.get(stage, {}).get("status") == "done"

    def checkpoint(self, stage: str) -> str:
        return self.stages[stage]["checkpoint"]


def _has_checkpoint(run_dir: Path) -> bool:
    return bool(ckpt_mod.complete_checkpoints(run_dir / "checkpoints")) if (run_dir / "checkpoints").is_dir() else False


def _fresh(run_dir: Path) -> None:
    """An interrupted stage that wrote no checkpoint starts again in an empty directory."""
    if run_dir.exists():
        shutil.rmtree(run_dir)


def _last_write(path: Path) -> float:
    times = [p.stat().st_mtime for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return max(times, default=0.0)


# ---- the stages: each returns its record (dir, parent, checkpoint, ...) -------------------------------------

def _data(plan: Plan, state: State, log) -> dict:
    from nanowhale.config import RunConfig
    from nanowhale.trainer import ensure_data

    cfg = RunConfig.from_dict(plan.pretrain)
    if plan.data["prepare"]:
        from nanowhale.data.prepare import prepare

        log(f"data: preparing {', '.join(plan.data['source'])} into {plan.data['dir']} ...")
        prepare(inputs=plan.data["source"], out_dir=plan.data["dir"], vocab_size=cfg.model["vocab_size"],
                tokenizer_train_bytes=int(cfg.data.tokenizer_train_mb * 1e6), shard_tokens=cfg.data.shard_tokens,
                progress=False)
    data_dir, _ = ensure_data(cfg, log=log)
    prep = data_dir / "prepare_state.json"
    tokens = json.loads(prep.read_text()).get("tokens", {}) if prep.exists() else {}
    return {"dir": str(data_dir), "parent": None, "train_tokens": tokens.get("train"), "val_tokens": tokens.get("val")}


def _samples_before(cfg, path: Path) -> None:
    """The untrained model's samples for the prompts the trainer samples after training (same settings)."""
    import nanowhale._C as _C
    from nanowhale.data.shards import shard_paths
    from nanowhale.generate import prompts_from_documents, sample
    from nanowhale.trainer import choose_device, choose_precision, ensure_data

    s = cfg.sample
    if s.n == 0:
        return
    data_dir, tok = ensure_data(cfg, log=lambda *a: None)
    device = choose_device(cfg.train.device)
    model = _C.Model(cfg.model_config(), seed=cfg.train.seed, device=device)
    model.precision = choose_precision(cfg.train.precision, device)
    pool = s.prompts or prompts_from_documents(tok, shard_paths(data_dir, "val"), s.n) or [""]
    prompts = [pool[i % len(pool)] for i in range(s.n)]
    texts = sample(model, tok, prompts, 1, s.max_new_tokens, s.temperature, s.top_k, s.top_p, s.seed)
    ckpt_mod.write_text_atomic(path, json.dumps(texts))


def _pretrain(plan: Plan, state: State, log) -> dict:
    from nanowhale.config import RunConfig
    from nanowhale.trainer import train

    d = plan.stage_dir("pretrain")
    if _has_checkpoint(d):
        log(f"pretrain: resuming {d} from its newest checkpoint")
        result = train(resume=d, progress=False, log=log)
    else:
        _fresh(d)
        d.mkdir(parents=True)
        cfg = RunConfig.from_dict(plan.pretrain)
        _samples_before(cfg, d / "samples_before.json")
        result = train(cfg, progress=False, log=log)
    if result["status"] != "done":
        raise ValueError(f"pretrain: the run stopped ({result['status']}); see {d / 'metrics.jsonl'}")
    return {"dir": str(d), "parent": state.stages["data"]["dir"], "checkpoint": result["checkpoint"],
            "steps": result["steps"]}


def _posttrain(stage: str):
    def run(plan: Plan, state: State, log) -> dict:
        import importlib

        from nanowhale.posttrain import settings as settings_mod

        fn = getattr(importlib.import_module(f"nanowhale.posttrain.{stage}"), stage)
        chain = plan.model_stages()
        parent_stage = chain[chain.index(stage) - 1]
        d = plan.stage_dir(stage)
        if _has_checkpoint(d):
            log(f"{stage}: resuming {d} from its newest checkpoint")
            result = fn(None, resume=d, log=log)
        else:
            _fresh(d)
            cls = {"sft": settings_mod.SFTSettings, "dpo": settings_mod.DPOSettings, "rl": settings_mod.RLSettings}
            settings = settings_mod.settings_from_dict(cls[stage], getattr(plan, stage))
            result = fn(settings, ckpt=state.checkpoint(parent_stage), run_dir=d, log=log)
        return {"dir": str(d), "parent": state.checkpoint(parent_stage), "checkpoint": result["checkpoint"],
                "steps": result["steps"]}
    return run


def _eval(plan: Plan, state: State, log) -> dict:
    """The plan's tasks on every stage's model (with val_bpb on the run's validation shards); a task whose data
    is absent is skipped and named."""
    from nanowhale.tasks import make_task
    from nanowhale.tasks.command import eval_tasks
    from nanowhale.tasks.runner import RESULTS_FILE, save_results

    available, skipped = {}, {}
    for spec in plan.eval["tasks"]:
        try:
            task = make_task(spec)
            task.load()
            available[spec] = task.name
        except ValueError as e:
            skipped[spec] = str(e)
            log(f"eval: {spec} skipped: {e}")
    for stage in plan.model_stages():
        ck = ckpt_mod.open_checkpoint(state.checkpoint(stage))
        path = plan.stage_dir(stage) / RESULTS_FILE
        entry = json.loads(path.read_text())["checkpoints"].get(str(ck.meta["step"]), {}) if path.exists() else {}
        todo = [spec for spec, name in available.items() if name not in entry.get("tasks", {})]
        if todo:  # what an interrupted eval had not measured yet
            log(f"eval: {stage}: {', '.join(todo)} ...")
            eval_tasks(str(ck.dir), ",".join(todo), limit=plan.eval["limit"] or None, out=log)
        elif "val_bpb" not in entry:  # no task to run: val_bpb alone, as eval_tasks records it
            from nanowhale.loaded import load

            bpb = load(ck.dir).val_bpb()["val_bpb"]
            save_results(plan.stage_dir(stage), str(ck.dir), ck.meta["step"], {"val_bpb": bpb})
            log(f"eval: {stage}: val_bpb {bpb:.4f}")
    return {"dir": None, "parent": state.checkpoint(plan.model_stages()[-1]), "skipped": skipped}


RUNNERS = {"data": _data, "pretrain": _pretrain, "sft": _posttrain("sft"), "dpo": _posttrain("dpo"),
           "rl": _posttrain("rl"), "eval": _eval}


def speedrun(plan: Plan, log=print, figures: bool = True) -> Path:
    """Runs (or continues) every stage of the plan, then writes the report (with figures unless told not to);
    returns RUN/report.md."""
    from nanowhale.speedrun.report import write_report

    state = State(plan)
    log(plan.describe())
    state.save()
    for stage in plan.stages():
        rec = state.stages.get(stage, {})
        if rec.get("status") == "done":
            log(f"{stage}: done in an earlier session ({rec.get('dir') or 'results in the stage directories'}); "
                "not redone")
            continue
        earlier = rec.get("seconds", 0.0)
        if rec.get("status") == "running":  # killed: count the time it ran until its last write
            d = plan.stage_dir(stage)
            earlier += max(0.0, _last_write(d) - rec["started"]) if d.is_dir() else 0.0
        state.stages[stage] = {"status": "running", "started": time.time(), "seconds": earlier,
                               "sessions": rec.get("sessions", 0) + 1}
        state.save()
        log(f"--- {stage}")
        t0 = time.perf_counter()
        out = RUNNERS[stage](plan, state, log)
        state.stages[stage].update(out, status="done", seconds=earlier + time.perf_counter() - t0)
        state.save()
    report = write_report(plan, state.stages, figures)
    final = plan.stage_dir(plan.model_stages()[-1])
    log(f"report: {report}")
    log(f"chat with it: nanowhale chat --ckpt {final}   serve it: nanowhale serve --ckpt {final}")
    return report


__all__ = ["STATE_FILE", "State", "speedrun"]
