"""What every post-training stage (sft, dpo, rl) shares: a run started from a parent checkpoint, or resumed.

A stage run directory is laid out exactly like a `nanowhale train` run (checkpoint.py, trainer.py):

    RUN/config.toml, config.json    the parent's resolved RunConfig (model, optim, ...): nw.load works on it
    RUN/posttrain.json              the stage, its settings and its parent checkpoint
    RUN/metrics.jsonl               one JSON object per step and event (keys: README "Post-training")
    RUN/checkpoints/step_NNNNNN/    model, optimizer, tokenizer; meta.json also holds "posttrain":
                                    {"stage", "settings", "parent": {"checkpoint", "step", "stage"}, "state"}

The optimizer starts fresh from the parent's optim settings; the stage's learning rate is the parent's times
`lr_scale`, on a schedule keyed on step / steps. The MoE balance biases keep updating at the model's
balance_gamma (the router still has to balance). A resumed stage reloads model, optimizer, step and the
stage's own state (data position, RNG counters) and continues bit-identically on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import nanowhale._C as _C
from nanowhale import checkpoint as ckpt_mod
from nanowhale import schedule
from nanowhale.config import RunConfig
from nanowhale.data.tokenizer import Tokenizer
from nanowhale.posttrain.settings import StageSettings, settings_from_dict
from nanowhale.trainer import _truncate_metrics, choose_device, choose_precision

POSTTRAIN_FILE = "posttrain.json"


class Stage:
    """One post-training run: the model, optimizer, tokenizer, run directory and metrics of a stage."""

    def __init__(self, name: str, settings: StageSettings, *, parent: str | Path | None = None,
                 resume: str | Path | None = None, run_dir: str | Path | None = None, log=print):
        if (parent is None) == (resume is None):
            raise ValueError(f"{name}: give either --ckpt (a parent checkpoint) or --resume (a {name} run)")
        self.name, self.log = name, log
        if resume is not None:
            ck = ckpt_mod.open_checkpoint(resume)
            pt = ck.meta.get("posttrain")
            if not pt or pt.get("stage") != name:
                raise ValueError(f"--resume: {ck.dir} is not a checkpoint of a `nanowhale {name}` run")
            settings = settings_from_dict(type(settings), pt["settings"])
            self.parent_info = pt["parent"]
            self.run_dir = ck.dir.parent.parent
            self.state = pt.get("state", {})
        else:
            ck = ckpt_mod.open_checkpoint(parent)
            settings.validate()
            pt_parent = ck.meta.get("posttrain") or {}
            self.parent_info = {"checkpoint": str(ck.dir.resolve()), "step": ck.meta["step"],
                                "stage": pt_parent.get("stage", "pretrain")}
            self.run_dir = Path(run_dir) if run_dir else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
            if any((self.run_dir / "checkpoints").glob("step_*")):
                raise ValueError(f"--run-dir: {self.run_dir} already holds checkpoints; continue it with "
                                 f"--resume {self.run_dir} or choose another directory")
            self.state = {}
        self.settings = settings
        self.cfg = RunConfig.from_dict(ck.config)
        if settings.threads:
            _C.set_num_threads(settings.threads)
        self.device = choose_device(settings.device)
        self.model = _C.Model(self.cfg.model_config(), seed=0, device=self.device)
        self.model.precision = choose_precision(self.cfg.train.precision, self.device)
        ck.load_model(self.model)
        self.opt = _C.Optimizer(self.model, self.cfg.optimizer_config())
        self.step = 0
        if resume is not None:
            ck.load_optimizer(self.model, self.opt)
            self.step = ck.meta["step"]
        if not ck.tokenizer_path.exists():
            raise ValueError(f"checkpoint {ck.dir} is incomplete: {ck.tokenizer_path.name} is missing")
        self.tokenizer_path = ck.tokenizer_path
        self.tok = Tokenizer.load(str(ck.tokenizer_path))
        self.meta_base = {k: ck.meta[k] for k in ("tokenizer", "data_dir") if k in ck.meta}
        self.last_ckpt = ck.dir if resume is not None else None

        self.run_dir.mkdir(parents=True, exist_ok=True)
        from nanowhale.config import to_toml

        (self.run_dir / "config.toml").write_text(to_toml(self.cfg.to_dict()))
        (self.run_dir / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1))
        (self.run_dir / POSTTRAIN_FILE).write_text(json.dumps(self._posttrain_meta(), indent=1))
        if resume is not None:
            _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        self._metrics = open(self.run_dir / "metrics.jsonl", "a")
        self.emit({"event": "resume" if resume is not None else "start", "stage": name, "step": self.step,
                   "device": self.device, "threads": _C.get_num_threads(), "parent": self.parent_info,
                   "settings": dataclasses.asdict(settings)})

    def _posttrain_meta(self) -> dict:
        return {"stage": self.name, "settings": dataclasses.asdict(self.settings), "parent": self.parent_info,
                "state": self.state}

    def update_settings(self, settings: StageSettings) -> None:
        """Settings resolved after start (defaults taken from the parent or the data), recorded again."""
        settings.validate()
        self.settings = settings
        (self.run_dir / POSTTRAIN_FILE).write_text(json.dumps(self._posttrain_meta(), indent=1))

    @property
    def resumed(self) -> bool:
        return self.last_ckpt is not None

    def emit(self, rec: dict) -> None:
        self._metrics.write(json.dumps(rec) + "\n")
        self._metrics.flush()

    @property
    def progress(self) -> float:
        return self.step / self.settings.steps

    def optimizer_step(self, skip: bool = False) -> dict:
        """Applies the accumulated gradients with the stage's schedules; zeroes them; returns what it used.
        skip: count the step but leave the weights alone (nothing was learned: Muon would still move them)."""
        s, p = self.settings, self.progress
        if skip:
            self.step += 1
            return {"lr_mult": 0.0, "grad_norm": 0.0, "balance_gamma": 0.0, "skipped": True}
        lr = s.lr_scale * schedule.lr_mult(p, s.warmup_frac, s.decay_frac, s.final_lr_frac)
        gamma = self.cfg.model["balance_gamma"]
        gnorm = self.opt.step(lr_mult=lr, wd_mult=1.0, muon_momentum=self.cfg.optim["muon_momentum"],
                              balance_gamma=gamma)
        self.model.zero_grad()
        self.step += 1
        return {"lr_mult": lr, "grad_norm": gnorm, "balance_gamma": gamma}

    def expert_stats(self) -> list[dict]:
        return [{"layer": r["layer"], "max_violation": r["max_violation"], "dead": r["dead_experts"]}
                for r in self.model.routing_stats()]

    def check_finite(self, **values) -> None:
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            where = f"the last good checkpoint is {self.last_ckpt}" if self.last_ckpt else "no checkpoint was written"
            self.emit({"event": "diverged", "step": self.step, **bad})
            raise FloatingPointError(f"{self.name}: non-finite {bad} at step {self.step}; {where}. "
                                     "Lower --lr-scale or check the data.")

    def save(self, extra_meta: dict | None = None) -> Path:
        meta = {"config": self.cfg.to_dict(), "tokens": 0, **self.meta_base, "posttrain": self._posttrain_meta(),
                **(extra_meta or {})}
        self.last_ckpt = ckpt_mod.save(self.run_dir / "checkpoints", self.step, self.model, self.opt, meta,
                                       self.tokenizer_path, keep=self.settings.keep)
        return self.last_ckpt

    def after_step(self, rec: dict, evaluate) -> None:
        """Logs a step's record (every log_every steps and the last), then evaluates and checkpoints on schedule."""
        s = self.settings
        if self.step % s.log_every == 0 or self.step == s.steps:
            self.emit({"step": self.step, **rec, "experts": self.expert_stats()})
        if s.eval_every and self.step % s.eval_every == 0 and self.step < s.steps:
            evaluate()
        if s.checkpoint_every and self.step % s.checkpoint_every == 0 and self.step < s.steps:
            self.save()

    def finish(self, evaluate, first: dict, t_start: float, results: dict) -> dict:
        """The final evaluation and checkpoint; the `end` event; returns the summary (with start/end samples).
        `results(first_eval, last_eval)` gives the stage's own summary fields."""
        last = evaluate()
        ckpt_dir = self.save()
        summary = {"status": "done", "run_dir": str(self.run_dir), "checkpoint": str(ckpt_dir), "steps": self.step,
                   **results(first, last), "seconds": time.perf_counter() - t_start,
                   "parent": self.parent_info["checkpoint"]}
        self.emit({"event": "end", "stage": self.name, "step": self.step, **summary})
        self._metrics.close()
        return {**summary, "samples_start": first.get("samples"), "samples": last.get("samples")}


__all__ = ["POSTTRAIN_FILE", "Stage"]
