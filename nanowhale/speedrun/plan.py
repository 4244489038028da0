"""A speedrun's plan: every stage's budget, data and settings, resolved before anything runs.

The budget table (budgets.toml beside this file) gives each scale a default budget and each stage's share of
it; `make_plan` turns the command line into a Plan whose dict form is saved in RUN/speedrun.json, so a rerun
of the same command finds the same plan and continues it (and a different command is refused there).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUDGETS = Path(__file__).with_name("budgets.toml")
STAGES = ("data", "pretrain", "sft", "dpo", "rl", "eval")
MODEL_STAGES = ("pretrain", "sft", "dpo", "rl")  # the stages that train a model, in lineage order
SETTING_STAGES = ("sft", "dpo", "rl")            # post-training: settings dataclasses of nanowhale.posttrain
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")


def parse_duration(text: str | float) -> float:
    """'10m', '1h30m', '90s', '600' -> seconds; ValueError naming the problem."""
    s = str(text).strip().replace(" ", "")
    parts = _DURATION.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"--budget {text!r}: expected a duration such as 600, 90s, 10m, 4h or 1h30m")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)
    if not seconds > 0:
        raise ValueError(f"--budget {text!r}: must be > 0")
    return seconds


def load_budgets(path: Path = BUDGETS) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


@dataclass
class Plan:
    scale: str
    budget_seconds: float
    machine: str
    run_dir: str
    data: dict                  # {"source": [...] or "default", "dir": prepared dir or "", "prepare": bool}
    seconds: dict               # stage -> its share of the budget in seconds
    pretrain: dict              # the resolved RunConfig dict
    sft: dict
    dpo: dict | None            # None: no preference data, no DPO
    rl: dict
    eval: dict                  # {"tasks": [...], "limit": N (0: all)}
    origin: dict                # origin.Origin.to_dict()
    price: dict = field(default_factory=dict)
    sets: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "Plan":
        return Plan(**d)

    def stages(self) -> list[str]:
        return [s for s in STAGES if s != "dpo" or self.dpo is not None]

    def model_stages(self) -> list[str]:
        return [s for s in MODEL_STAGES if s != "dpo" or self.dpo is not None]

    def stage_dir(self, stage: str) -> Path:
        return Path(self.run_dir) / stage

    def describe(self) -> str:
        """The plan as a table: what each stage gets and does."""
        from nanowhale.speedrun.origin import Origin

        cfg = self.pretrain
        m, t = cfg["model"], cfg["train"]
        origin = Origin(**self.origin).describe(cfg["preset"])
        data = ("the default corpus (the Python standard library)" if self.data["source"] == "default"
                else ", ".join(self.data["source"]))
        pre = (f"time budget {t['time_budget']:g} s" if t["time_budget"] > 0 else f"{t['steps']} steps")
        rows = [("data", "—", f"{data}" + (f" -> {self.data['dir']}" if self.data["prepare"] else ""),
                 f"tokenizer vocab {m['vocab_size']}")]
        rows.append(("pretrain", self._share("pretrain"), "data above",
                     f"{pre}, {t['batch_tokens']:,} tokens/step, model d{m['d_model']} x {m['n_layer']} layers, "
                     f"{m['n_experts']} experts top-{m['top_k']}, seq {m['seq_len']}; checkpoint every "
                     f"{cfg['run']['checkpoint_every']} steps"))
        for stage in SETTING_STAGES:
            s = getattr(self, stage)
            if s is None:
                rows.append((stage, "—", "no preference data (--dpo-data)", "skipped; its share went to pretraining"))
                continue
            what = ", ".join(s["data"]) if "data" in s else f"task {s['task']} (verifiable reward)"
            extra = (f", {s['prompts']} problems x {s['group']} samples" if stage == "rl" else
                     f", {s['batch_rows']} rows per step" if stage == "sft" and s["batch_rows"] else "")
            rows.append((stage, self._share(stage), what, f"{s['steps']} steps, lr_scale {s['lr_scale']:g}{extra}, "
                         f"checkpoint every {s['checkpoint_every'] or s['steps']} steps"))
        limit = self.eval["limit"] or "all"
        rows.append(("eval", self._share("eval"), ", ".join(self.eval["tasks"]) or "none",
                     f"{limit} items per task, on every stage's model"))
        widths = [max(len(r[i]) for r in rows + [("stage", "budget", "data", "settings")]) for i in range(3)]
        lines = [f"speedrun {self.scale}: budget {_fmt_seconds(self.budget_seconds)} (calibrated on "
                 f"{self.machine}); run directory {self.run_dir}",
                 f"config: {origin}" + (f"; --set {' '.join(self.sets)}" if self.sets else "")]
        for r in [("stage", "budget", "data", "settings")] + rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
        return "\n".join(lines)

    def _share(self, stage: str) -> str:
        return f"{_fmt_seconds(self.seconds[stage])} ({100 * self.seconds[stage] / self.budget_seconds:.0f}%)"


def _fmt_seconds(s: float) -> str:
    return f"{s / 3600:.2g} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _parse_sets(sets: list[str]) -> dict[str, list[str]]:
    """--set STAGE.KEY=VALUE, grouped by stage: {"pretrain": ["model.d_model=64"], "sft": ["steps=10"], ...}."""
    out: dict[str, list[str]] = {s: [] for s in ("pretrain", *SETTING_STAGES, "eval")}
    for text in sets:
        stage, dot, rest = text.partition(".")
        if stage not in out or not dot or "=" not in rest:
            raise ValueError(f"--set {text!r}: expected STAGE.KEY=VALUE with STAGE one of {', '.join(out)} "
                             "(e.g. pretrain.model.d_model=64, sft.steps=20, eval.limit=50)")
        out[stage].append(rest)
    return out


def _value(text: str):
    """VALUE of KEY=VALUE in TOML syntax (16, 0.5, true, "x", [..]), else the bare string."""
    raw = text.partition("=")[2].strip()
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _stage_settings(stage: str, base: dict, sets: list[str]) -> dict:
    from nanowhale.posttrain import settings as settings_mod

    cls = {"sft": settings_mod.SFTSettings, "dpo": settings_mod.DPOSettings, "rl": settings_mod.RLSettings}[stage]
    d = dataclasses.asdict(cls())
    d.update(base)
    for text in sets:
        d[text.partition("=")[0].strip()] = _value(text)
    try:
        return dataclasses.asdict(settings_mod.settings_from_dict(cls, d))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{stage}: {e}") from None


def _data_source(data: str | None, run_dir: Path) -> dict:
    if data is None:
        return {"source": "default", "dir": "", "prepare": False}
    d = Path(data)
    if not d.exists():
        raise ValueError(f"--data {data}: does not exist")
    if (d / "tokenizer.nwtok").exists():  # already prepared: used as it is
        return {"source": [str(d)], "dir": str(d.resolve()), "prepare": False}
    return {"source": [str(d.resolve())], "dir": str((run_dir / "data").resolve()), "prepare": True}


def make_plan(scale: str = "tiny", budget: str | float | None = None, data: str | None = None,
              sft_data: list[str] | None = None, dpo_data: list[str] | None = None, source: str | None = None,
              run_dir: str | Path | None = None, sets: list[str] | None = None, repo: str | Path = ".") -> Plan:
    """The plan a `nanowhale speedrun` command line describes; runs nothing (reads the research ledger for --from)."""
    from nanowhale.config import PRESETS, merge, parse_override, resolve, validate
    from nanowhale.speedrun.origin import research_origin

    table = load_budgets()
    if scale not in PRESETS or scale not in table:
        raise ValueError(f"--scale {scale!r}: expected one of {', '.join(p for p in PRESETS if p in table)}")
    row = table[scale]
    total = parse_duration(budget if budget is not None else row["budget"])
    run_dir = (Path(run_dir) if run_dir else Path("runs") / f"speedrun-{scale}").resolve()
    for flag, files in (("--sft-data", sft_data), ("--dpo-data", dpo_data)):
        missing = [f for f in files or [] if not f.startswith("task:") and not Path(f).exists()]
        if missing:
            raise ValueError(f"{flag}: {', '.join(missing)} does not exist")
    per_stage = _parse_sets(list(sets or []))
    stage_rows = {s: dict(row[s]) for s in ("pretrain", *SETTING_STAGES, "eval")}
    for text in per_stage["eval"]:
        key = text.partition("=")[0].strip()
        if key not in ("tasks", "limit"):
            raise ValueError(f"--set eval.{key}: unknown key (known: tasks, limit)")
        value = _value(text)
        stage_rows["eval"][key] = [x for x in value.split(",") if x] if key == "tasks" and isinstance(value, str) \
            else value
    shares = {s: float(stage_rows[s]["share"]) for s in stage_rows}
    if dpo_data is None:  # no preference data: DPO's time goes to pretraining
        shares["pretrain"] += shares.pop("dpo")
    seconds = {s: total * v for s, v in shares.items()}
    scale_steps = total / parse_duration(row["budget"])

    def steps(stage: str) -> int:
        return max(1, round(stage_rows[stage]["steps"] * scale_steps))

    data_source = _data_source(data, run_dir)
    origin = research_origin(source, repo)
    cfg = resolve(scale)
    merge(cfg, origin.settings)
    pre = stage_rows["pretrain"]
    keys = {"run": {"dir": str(run_dir / "pretrain"), "name": "", "checkpoint_every": int(pre["checkpoint_every"])},
            "train": {"time_budget": seconds["pretrain"]}, "eval": {"every": int(pre["eval_every"])},
            "data": {"dir": data_source["dir"]}}
    if data_source["dir"] and not data_source["prepare"]:  # the prepared data decides the vocabulary
        from nanowhale.data.tokenizer import Tokenizer

        keys["model"] = {"vocab_size": Tokenizer.load(str(Path(data_source["dir"]) / "tokenizer.nwtok")).vocab_size}
    merge(cfg, keys)
    for text in per_stage["pretrain"]:
        merge(cfg, parse_override(text))
    validate(cfg)

    def settings(stage: str, **given) -> dict:
        """The table's settings of the stage (its steps scaled to the budget), then the data given."""
        table = {k: v for k, v in stage_rows[stage].items() if k != "share"}
        return _stage_settings(stage, {**table, "steps": steps(stage), **given}, per_stage[stage])

    eval_tasks = stage_rows["eval"]["tasks"]
    limit = stage_rows["eval"]["limit"]
    if not isinstance(eval_tasks, list) or not isinstance(limit, int) or limit < 0:
        raise ValueError("eval: tasks must be a list of task names and limit a whole number >= 0")
    return Plan(
        scale=scale, budget_seconds=total, machine=row["machine"], run_dir=str(run_dir), data=data_source,
        seconds=seconds, pretrain=cfg.to_dict(),
        sft=settings("sft", **({"data": list(sft_data)} if sft_data else {})),
        dpo=settings("dpo", data=list(dpo_data)) if dpo_data else None,
        rl=settings("rl"),
        eval={"tasks": list(eval_tasks), "limit": limit}, origin=origin.to_dict(), price=dict(table["price"]),
        sets=list(sets or []))


def same_plan(saved: dict, plan: Plan) -> list[str]:
    """The top-level keys in which a saved plan differs from this one (empty: the same run)."""
    now = json.loads(json.dumps(plan.to_dict()))
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


__all__ = ["BUDGETS", "MODEL_STAGES", "Plan", "STAGES", "load_budgets", "make_plan", "parse_duration", "same_plan"]
