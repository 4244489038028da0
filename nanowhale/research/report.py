"""`nanowhale research status | show | plot`: reading the ledger (never writing it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from nanowhale.research.commands import block
from nanowhale.research.context import RESEARCH_DIR, Context

TSV_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")  # autoresearch's results.tsv order
AUTORESEARCH_STATUS = {"keep": "keep", "discard": "discard", "inconclusive": "discard", "stale": "discard",
                       "crash": "crash"}


LIGHT = ("id", "agent", "verdict", "metric_mean", "throughput_mean", "description", "total_seconds")  # no diffs, no logs


def summary(ctx: Context, last: int = 10) -> dict:
    exps = ctx.experiments(LIGHT)
    done = [e for e in exps if e["verdict"] not in ("pending",)]
    counts = {v: sum(1 for e in done if e["verdict"] == v) for v in ("keep", "discard", "inconclusive", "stale", "crash")}
    try:
        noise = ctx.noise()
    except ValueError:
        noise = None
    best = ctx.best()
    lineage = ["baseline"] + [f"#{e['id']}" for e in done if e["verdict"] == "keep"]
    spent = sum((e["total_seconds"] or 0) for e in done)
    spent += sum((b["train_seconds"] or 0) + (b["eval_seconds"] or 0) for b in ctx.ledger.rows("baselines", "tag = ?", (ctx.tag,)))
    out = {
        "tag": ctx.tag, "branch": ctx.s["branch"], "scale": ctx.s["scale"], "budget": ctx.s["budget"],
        "metric": ctx.s["metric"], "direction": ctx.s["direction"], "k": ctx.s["k"],
        "baseline_runs": noise["r"] if noise else 0,
        "baseline_mean": noise["mean"] if noise else None,
        "noise_sigma": noise["sigma"] if noise else None,
        "throughput_sigma": noise["throughput_sigma"] if noise else None,
        "best": best["metric_mean"] if best else (noise["mean"] if noise else None),
        "best_experiment": best["id"] if best else None,
        "best_seeds": len(best["metric_values"]) if best else (noise["r"] if noise else 0),
        "best_values": " ".join(f"{v:.6f}" for v in (best["metric_values"] if best else (noise["metric_values"] if noise else []))),
        "best_commit": ctx.best_commit(),
        "gain_vs_baseline": (abs(best["metric_mean"] - noise["mean"]) * (1 if _better(ctx, best["metric_mean"], noise["mean"]) else -1)
                             if best and noise else 0.0),
        "lineage": " -> ".join(lineage),
        "experiments": len(done),
        "keeps": counts["keep"], "discards": counts["discard"], "inconclusive": counts["inconclusive"],
        "crashes": counts["crash"], "stale": counts["stale"],
        "keep_rate": counts["keep"] / len(done) if done else 0.0,
        "time_spent_s": spent,
        "last": [{k: e[k] for k in ("id", "agent", "verdict", "metric_mean", "throughput_mean", "description")}
                 for e in exps[-last:]],
    }
    if ctx.ledger.get(f"swarm/{ctx.tag}") is not None:  # several agents: who did what, what is taken now
        from nanowhale.research import swarm

        out["agents"] = swarm.agents_summary(ctx)
        out["claims"] = [{k: c[k] for k in ("id", "agent", "description", "tags", "files", "config_keys", "duplicate_of")}
                         for c in swarm.open_claims(ctx)]
    return out


def _better(ctx: Context, a: float, b: float) -> bool:
    return a < b if ctx.s["direction"] == "lower" else a > b


def status(as_json: bool = False, tsv: bool = False, last: int = 10, path=".", tag: str | None = None, log=print) -> int:
    ctx = Context.open(path, tag)
    if tsv:
        log("\t".join(TSV_COLUMNS))
        for e in ctx.experiments(("commit_sha", "base_commit", "metric_mean", "peak_memory_mb", "verdict", "description")):
            if e["verdict"] == "pending":
                continue
            log("\t".join([(e["commit_sha"] or e["base_commit"])[:7],
                           f"{e['metric_mean']:.6f}" if e["metric_mean"] is not None else "0.000000",
                           f"{(e['peak_memory_mb'] or 0) / 1024:.1f}", AUTORESEARCH_STATUS[e["verdict"]],
                           e["description"].replace("\t", " ").replace("\n", " ")]))
        return 0
    s = summary(ctx, last)
    if as_json:
        log(json.dumps(s, indent=1))
        return 0
    rows = s.pop("last")
    agents, claims = s.pop("agents", None), s.pop("claims", None)
    for r in rows:
        m = "n/a" if r["metric_mean"] is None else f"{r['metric_mean']:.6f}"
        who = f"{r['agent']:<10} " if agents else ""
        log(f"#{r['id']:<4} {who}{r['verdict']:<12} {m:>10}  {r['description'][:80]}")
    if agents is not None:
        for name, a in sorted(agents.items()):
            best = "n/a" if a["best"] is None else f"{a['best']:.6f}"
            log(f"agent {name:<10} {a['experiments']} experiments, {a['keeps']} keeps, {a['stale']} stale, best kept {best}")
        for c in claims:
            log(f"claim {c['id']:<4} {c['agent']:<10} {c['description'][:70]}"
                + (f"  [duplicate of {c['duplicate_of'].split(' (')[0]}]" if c["duplicate_of"] else ""))
        s["open_claims"] = len(claims)
    s["time_spent"] = time.strftime("%H:%M:%S", time.gmtime(s.pop("time_spent_s")))
    log(block(**s))
    return 0


def show(eid: int, diff_only: bool = False, path=".", log=print) -> int:
    ctx = Context.open(path)
    e = ctx.ledger.row("experiments", eid)
    if e is None or e["tag"] != ctx.tag:
        raise ValueError(f"no experiment {eid} under tag {ctx.tag}")
    if diff_only:
        log((e["code_diff"] or "") + (e["config_diff"] or ""))
        return 0
    keys = ("id", "verdict", "status", "reason", "description", "parent_id", "base_commit", "commit_sha",
            "seeds", "metric_name", "metric_values", "metric_mean", "best_metric", "margin", "throughput_values",
            "throughput_mean", "best_throughput", "throughput_margin", "rebuild_seconds", "train_seconds",
            "eval_seconds", "total_seconds", "steps", "tokens", "peak_memory_mb", "agent")
    log(block(**{k: e[k] for k in keys}))
    log("--- config diff\n" + (e["config_diff"] or "(none)"))
    log("--- code diff\n" + (e["code_diff"] or "(none)"))
    if e["log_tail"]:
        log("--- log tail\n" + e["log_tail"])
    log(f"(re-apply: nanowhale research show {eid} --diff | git apply)")
    return 0


def ledger_figures(ledger: str | None, out: str | None, dpi: int = 100, log=print) -> list[str]:
    """The figures of notebooks/research.ipynb (nanowhale.plots) for a ledger file or the newest one found."""
    from pathlib import Path

    from nanowhale.analysis.research import load_ledger, newest_ledger
    from nanowhale.plots import research_figures

    path = newest_ledger(ledger)
    if path is None:
        raise ValueError(f"no research ledger (*.sqlite) under {ledger or './research or ../research'}")
    dest = Path(out) if out else path.parent / "plots"
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in research_figures(load_ledger(path)).items():
        fig.savefig(dest / f"{name}.png", dpi=dpi)
        written.append(str(dest / f"{name}.png"))
    return written


def plot(out: str | None = None, ledger: str | None = None, dpi: int = 100, path=".", log=print) -> int:
    """research/progress.png: every experiment's metric in order, kept ones marked and labelled, the running
    best; plus the notebook's ledger figures in research/plots/. With `ledger`, only those figures."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plot needs matplotlib: pip install 'nanowhale[plot]'") from None
    if ledger:
        for f in ledger_figures(ledger, out, dpi):
            log(f)
        return 0
    ctx = Context.open(path)
    noise = ctx.noise()
    exps = [e for e in ctx.experiments(LIGHT) if e["metric_mean"] is not None]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    xs = [e["id"] for e in exps]
    ys = [e["metric_mean"] for e in exps]
    kept = [e for e in exps if e["verdict"] == "keep"]
    other = [e for e in exps if e["verdict"] != "keep"]
    agents = sorted({e["agent"] for e in exps})
    if len(agents) > 1:  # a swarm: each agent its colour; kept ones large and outlined
        palette = plt.get_cmap("tab10")
        for i, a in enumerate(agents):
            mine = [e for e in exps if e["agent"] == a]
            ax.scatter([e["id"] for e in mine if e["verdict"] != "keep"],
                       [e["metric_mean"] for e in mine if e["verdict"] != "keep"], color=palette(i % 10), s=18,
                       alpha=0.6, label=f"{a}: not kept")
            ax.scatter([e["id"] for e in mine if e["verdict"] == "keep"],
                       [e["metric_mean"] for e in mine if e["verdict"] == "keep"], color=palette(i % 10), s=60,
                       edgecolors="black", label=f"{a}: kept", zorder=3)
    else:
        ax.scatter([e["id"] for e in other], [e["metric_mean"] for e in other], c="#999999", s=18,
                   label="discarded / inconclusive")
        ax.scatter([e["id"] for e in kept], [e["metric_mean"] for e in kept], c="#1a7f37", s=40, label="kept", zorder=3)
    bx, by, best = [0], [noise["mean"]], noise["mean"]
    for e in exps:
        if e["verdict"] == "keep":
            best = e["metric_mean"]
        bx.append(e["id"])
        by.append(best)
    ax.step(bx, by, where="post", c="#1a7f37", lw=1.5, label="running best")
    ax.axhspan(noise["mean"] - noise["sigma"], noise["mean"] + noise["sigma"], color="#dddddd", alpha=0.6,
               label=f"baseline ± σ ({noise['r']} runs)")
    for e in kept:
        ax.annotate(e["description"][:40], (e["id"], e["metric_mean"]), textcoords="offset points", xytext=(4, -12),
                    fontsize=7, rotation=-20)
    crashes = sum(1 for e in ctx.experiments(LIGHT) if e["verdict"] == "crash")
    ax.set_xlabel(f"experiment ({len(xs)} scored, {crashes} crashed)")
    ax.set_ylabel(f"{ctx.s['metric']} ({ctx.s['direction']} is better)")
    ax.set_title(f"research {ctx.tag}: {ctx.s['scale']}, budget {ctx.s['budget']}")
    if ys:  # the running best and the baseline band in view; far-off failures may fall outside
        span = max(by) - min(by) + 6 * noise["sigma"]
        lo, hi = min(by) - 3 * noise["sigma"] - 0.1 * span, max(by) + 3 * noise["sigma"] + 0.1 * span
        ax.set_ylim(min(lo, min(ys)) if ctx.s["direction"] == "higher" else lo,
                    max(hi, max(ys)) if ctx.s["direction"] == "higher" else hi)
    ax.legend(fontsize=8)
    fig.tight_layout()
    dest = str(ctx.repo / RESEARCH_DIR / "progress.png")
    fig.savefig(dest, dpi=dpi)
    plt.close(fig)
    figures = (ledger_figures(str(ctx.ledger.path), out or str(ctx.repo / RESEARCH_DIR / "plots"), dpi)
               if isinstance(ctx.ledger.path, Path) else [])  # the notebook's figures read SQLite files
    log(block(plot=dest, figures=" ".join(figures), experiments=len(xs), kept=len(kept)))
    return 0


__all__ = ["plot", "show", "status", "summary"]
