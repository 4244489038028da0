"""A research ledger (nanowhale.research.ledger, SQLite) as tables: every experiment in order with the running
best, verdict counts, the kept changes ranked by gain against their noise margin, promotions to the next
scale, and per-agent counts. Reads a ledger that agents are still writing (WAL: readers never block).

    led = load_ledger()                 # the newest research/*.sqlite (or ../research, $NANOWHALE_LEDGER),
                                        # the rows of its current research tag
    progress_table(led)                 # id, agent, hours, metric, verdict, running best

The table functions return the text NO_LEDGER for None (no ledger yet), so a notebook runs through and says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanowhale.analysis.table import Table

NO_LEDGER = "no ledger yet: start one with `nanowhale research init TAG` (agent_recipes/README.md)"
VERDICTS = ("keep", "discard", "inconclusive", "crash")
EXPERIMENT_KEYS = ("id", "agent", "tag", "started_at", "finished_at", "description", "scale", "metric_name",
                   "direction", "metric_mean", "throughput_mean", "margin", "throughput_margin", "best_metric",
                   "best_throughput", "status", "verdict", "reason", "commit_sha")
BASELINE_KEYS = ("id", "agent", "tag", "created_at", "role", "commit_sha", "scale", "seed", "metric", "throughput",
                 "status")
PROMOTION_KEYS = ("id", "agent", "tag", "from_scale", "to_scale", "start_mean", "best_mean", "margin",
                  "heldout_start_mean", "heldout_best_mean", "heldout_margin", "verdict", "heldout_verdict")


@dataclass
class ResearchLedger:
    path: Path
    tag: str | None        # the research tag these tables hold (a ledger can hold several)
    settings: dict         # that tag's settings (`nanowhale research init`): scale, budget, metric, k, ...
    experiments: Table     # EXPERIMENT_KEYS, in id order
    baselines: Table       # BASELINE_KEYS
    promotions: Table      # PROMOTION_KEYS

    @property
    def lower_is_better(self) -> bool:
        d = self.settings.get("direction") or (self.experiments["direction"][0] if len(self.experiments) else "lower")
        return d != "higher"

    @property
    def metric_name(self) -> str:
        return self.settings.get("metric") or (self.experiments["metric_name"][0] if len(self.experiments)
                                               else "val_bpb")


def ledger_summary(led: ResearchLedger | None) -> Table | str:
    """One row: the tag, its rung, budget, metric, keep rule (k, throughput floor), start commit and counts."""
    if led is None:
        return NO_LEDGER
    s = led.settings
    row = {"tag": led.tag, "scale": s.get("scale"), "budget": s.get("budget"), "metric": led.metric_name,
           "direction": "lower" if led.lower_is_better else "higher", "k": s.get("k"),
           "throughput_floor": s.get("throughput_floor"), "start_commit": (s.get("start_commit") or "")[:12],
           "baselines": len(led.baselines), "experiments": len(led.experiments), "promotions": len(led.promotions)}
    return Table.from_records([row], list(row))


def _search(root) -> list[Path]:
    if root is not None:
        return [Path(root)]
    env = os.environ.get("NANOWHALE_LEDGER")
    if env:
        return [Path(env)]
    return [Path("research"), Path("..") / "research"]


def newest_ledger(root: str | Path | None = None) -> Path | None:
    """The most recently written *.sqlite ledger under root (default: $NANOWHALE_LEDGER, ./research,
    ../research); a file given as root is returned as is; None when there is none."""
    for r in _search(root):
        if r.is_file():
            return r
        if r.is_dir():
            found = sorted(r.glob("*.sqlite"), key=lambda p: p.stat().st_mtime)
            if found:
                return found[-1]
    return None


def load_ledger(path: str | Path | None = None, tag: str | None = None) -> ResearchLedger | None:
    """The ledger at path (None: the newest), the rows of one research tag (None: the ledger's current tag,
    else the newest experiment's); None, with a message, when there is no ledger yet."""
    from nanowhale.research.ledger import load_rows

    p = newest_ledger(path)
    if p is None:
        print(NO_LEDGER)
        return None
    rows = load_rows(p)
    settings = rows["settings"]
    if tag is None:
        tag = settings.get("current") or (rows["experiments"][-1]["tag"] if rows["experiments"] else None)
    tables = {}
    for table, keys in (("experiments", EXPERIMENT_KEYS), ("baselines", BASELINE_KEYS),
                        ("promotions", PROMOTION_KEYS)):
        tables[table] = Table.from_records([r for r in rows[table] if tag is None or r["tag"] == tag], list(keys))
    return ResearchLedger(p, tag, settings.get(f"tag/{tag}") or {}, **tables)


def baseline_mean(led: ResearchLedger) -> float:
    """Mean metric of the baseline repeats (role 'baseline') of the scale the experiments ran at; NaN if none."""
    b = led.baselines
    if not len(b):
        return float("nan")
    ok = (b["role"] == "baseline") & ~np.isnan(b["metric"])
    if len(led.experiments):
        ok &= b["scale"] == led.experiments["scale"][0]
    return float(b["metric"][ok].mean()) if ok.any() else float("nan")


def progress_table(led: ResearchLedger | None) -> Table | str:
    """Every experiment in id order: hours since the first started, its mean metric, the verdict (running:
    not finished yet), and the running best: the baseline's mean, then each keep's mean where it improves."""
    if led is None:
        return NO_LEDGER
    e = led.experiments
    better = np.fmin if led.lower_is_better else np.fmax
    best = baseline_mean(led)
    if np.isnan(best) and len(e):
        best = e["best_metric"][0]
    running = []
    for verdict, m in zip(e["verdict"], e["metric_mean"]):
        if verdict == "keep" and not np.isnan(m):
            best = better(best, m)
        running.append(best)
    t0 = np.nanmin(e["started_at"]) if len(e) else 0.0
    verdicts = np.array([v if (isinstance(v, str) and not np.isnan(f)) else "running"
                         for v, f in zip(e["verdict"], e["finished_at"])], dtype=object)
    return Table({"id": e["id"], "agent": e["agent"], "hours": (e["started_at"] - t0) / 3600.0,
                  "metric": e["metric_mean"], "throughput": e["throughput_mean"], "verdict": verdicts,
                  "running_best": np.array(running, dtype=float), "description": e["description"]})


def verdict_table(led: ResearchLedger | None) -> Table | str:
    """Experiments per agent and verdict (a row 'all' when several agents share the ledger), with rates."""
    if led is None:
        return NO_LEDGER
    p = progress_table(led)
    agents = sorted(set(p["agent"]))
    groups = [(a, p["agent"] == a) for a in agents]
    if len(agents) != 1:
        groups.append(("all", np.ones(len(p), dtype=bool)))
    cols = {"agent": [], "experiments": []}
    for v in (*VERDICTS, "running"):
        cols[v] = []
    for name, mask in groups:
        cols["agent"].append(name)
        cols["experiments"].append(int(mask.sum()))
        for v in (*VERDICTS, "running"):
            cols[v].append(int((p["verdict"][mask] == v).sum()))
    t = Table({k: np.array(v, dtype=object if k == "agent" else np.int64) for k, v in cols.items()})
    finished = np.maximum(t["experiments"] - t["running"], 1)
    for v in ("keep", "crash"):
        t.columns[f"{v}_rate"] = t[v] / finished
    return t


def kept_table(led: ResearchLedger | None) -> Table | str:
    """The kept changes, largest gain first: gain = improvement over the best they were compared to (positive
    is better), margin = the noise margin it had to beat, and the throughput change in percent."""
    if led is None:
        return NO_LEDGER
    e = led.experiments
    kept = e.select(e["verdict"] == "keep")
    sign = 1.0 if led.lower_is_better else -1.0
    gain = sign * (kept["best_metric"] - kept["metric_mean"])
    with np.errstate(invalid="ignore", divide="ignore"):
        tput = 100.0 * (kept["throughput_mean"] / kept["best_throughput"] - 1.0)
        ratio = gain / kept["margin"]
    t = Table({"id": kept["id"], "agent": kept["agent"], "description": kept["description"], "gain": gain,
               "margin": kept["margin"], "gain_over_margin": ratio, "throughput_change_pct": tput,
               "commit": kept["commit_sha"]})
    return t.sort("gain", descending=True)


def promotions_table(led: ResearchLedger | None) -> Table | str:
    """Transfer checks at the next scale: each promotion's start and best means, margin and verdicts."""
    if led is None:
        return NO_LEDGER
    p = led.promotions
    return Table({k: p[k] for k in ("id", "from_scale", "to_scale", "start_mean", "best_mean", "margin", "verdict",
                                    "heldout_start_mean", "heldout_best_mean", "heldout_verdict")})
