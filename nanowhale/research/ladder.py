"""The scale ladder (ladder.toml next to this file, or a file given to `research init --ladder`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nanowhale.research.size import DEFAULT_TOLERANCE

DEFAULT_LADDER = Path(__file__).with_name("ladder.toml")
BUDGET_KINDS = ("flops", "tokens", "time")


@dataclass
class Rung:
    name: str
    preset: str
    budget_cpu: str
    budget_gpu: str
    eval_tokens: int
    set: dict = field(default_factory=dict)   # {"model.d_model": 64, ...} as --set overrides
    size_tolerance: float = DEFAULT_TOLERANCE  # relative change of active params and FLOPs/token allowed (size.py)

    def overrides(self) -> list[str]:
        from nanowhale.config import to_toml

        return [f"{k}={to_toml({'v': v}).split('=', 1)[1].strip()}" for k, v in self.set.items()]


def parse_budget(text: str) -> tuple[str, float]:
    """'flops:2e13' -> ('flops', 2e13); ValueError naming the problem."""
    kind, sep, amount = str(text).partition(":")
    if not sep or kind not in BUDGET_KINDS:
        raise ValueError(f"budget {text!r}: expected KIND:AMOUNT with KIND one of {', '.join(BUDGET_KINDS)} "
                         "(e.g. flops:2e13, tokens:1e6, time:300)")
    try:
        value = float(amount)
    except ValueError:
        raise ValueError(f"budget {text!r}: {amount!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"budget {text!r}: the amount must be > 0")
    return kind, value


def load_ladder(path: str | Path = DEFAULT_LADDER) -> list[Rung]:
    from nanowhale.config import load_toml

    d = load_toml(path)
    rungs = d.get("rung")
    if not isinstance(rungs, list) or not rungs:
        raise ValueError(f"{path}: expected [[rung]] tables")
    tolerance = _tolerance(d.get("size_tolerance", DEFAULT_TOLERANCE), f"{path}: size_tolerance")
    out = []
    for i, r in enumerate(rungs):
        missing = [k for k in ("name", "preset", "budget_cpu", "budget_gpu", "eval_tokens") if k not in r]
        if missing:
            raise ValueError(f"{path}: rung {i + 1} lacks {', '.join(missing)}")
        unknown = set(r) - {"name", "preset", "budget_cpu", "budget_gpu", "eval_tokens", "set", "size_tolerance"}
        if unknown:
            raise ValueError(f"{path}: rung {r['name']}: unknown keys {sorted(unknown)}")
        parse_budget(r["budget_cpu"]), parse_budget(r["budget_gpu"])
        out.append(Rung(r["name"], r["preset"], r["budget_cpu"], r["budget_gpu"], int(r["eval_tokens"]),
                        _flatten(r.get("set", {})),
                        _tolerance(r.get("size_tolerance", tolerance), f"{path}: rung {r['name']}: size_tolerance")))
    return out


def _tolerance(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{where}: expected a fraction in (0, 1), e.g. 0.1 for ±10%, got {value!r}")
    return float(value)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def rung(ladder: list[Rung], name: str) -> Rung:
    for r in ladder:
        if r.name == name:
            return r
    raise ValueError(f"scale {name!r} is not on the ladder (rungs: {', '.join(r.name for r in ladder)})")


def next_rung(ladder: list[Rung], name: str) -> Rung:
    names = [r.name for r in ladder]
    i = names.index(rung(ladder, name).name)
    if i + 1 >= len(ladder):
        raise ValueError(f"scale {name!r} is the top of the ladder; nothing to promote to")
    return ladder[i + 1]


__all__ = ["DEFAULT_LADDER", "Rung", "load_ladder", "next_rung", "parse_budget", "rung"]
