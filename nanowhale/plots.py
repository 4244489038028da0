"""Figures (matplotlib) of runs, MoE routing, research ledgers and post-training, from the tables of
nanowhale.analysis. Each function returns a matplotlib Figure (Jupyter shows it; save it with
fig.savefig). Figures are made without pyplot, so nothing global accumulates in scripts or the CLI.
A panel without data says so in the panel instead of failing.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nanowhale.analysis.posttraining import stage_metrics, stage_of
from nanowhale.analysis.research import (
    ResearchLedger,
    baseline_mean,
    kept_table,
    progress_table,
    promotions_table,
    verdict_table,
)
from nanowhale.analysis.routing import TOKEN_CLASSES, Routing, coselection, router_entropy, specialisation
from nanowhale.analysis.runs import Run


def _figure(rows: int, cols: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _lines(ax, runs: list[Run], table: str, x: str, y: str, scale: float = 1.0, marker=None) -> bool:
    """One line per run of column y against x of run.<table>; False if no run has data."""
    drawn = False
    for run in runs:
        t = getattr(run, table)
        if not (t.has_data(x) and t.has_data(y)):
            continue
        ok = ~np.isnan(t[x]) & ~np.isnan(t[y])
        ax.plot(t[x][ok], t[y][ok] * scale, marker=marker, label=run.name)
        drawn = True
    if drawn and len(runs) > 1:
        ax.legend(fontsize="small")
    return drawn


def _no_run() -> Figure:
    fig, axes = _figure(1, 1)
    _no_data(axes[0, 0], "no run yet: train one with `nanowhale train`")
    return fig


# ---- runs -------------------------------------------------------------------------------------------

LOSS_X = (("tokens", "tokens"), ("flops", "FLOPs (6·N_active·tokens + attention)"),
          ("wall_seconds", "seconds of training steps"))


def loss_figure(runs: list[Run]) -> Figure:
    """Training loss (top) and val_bpb (bottom) against tokens, FLOPs and training seconds."""
    fig, axes = _figure(2, 3)
    for col, (x, xlabel) in enumerate(LOSS_X):
        for row, (table, y, ylabel) in enumerate((("steps", "loss", "train loss (nats)"),
                                                  ("evals", "val_bpb", "val_bpb"))):
            ax = axes[row, col]
            if _lines(ax, runs, table, x, y, marker="o" if table == "evals" else None):
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel)
            else:
                _no_data(ax, f"no {y} yet")
    return fig


def throughput_figure(runs: list[Run]) -> Figure:
    """Tokens per second and MFU (%) of every logged step."""
    fig, axes = _figure(1, 2)
    for ax, (y, label, scale) in zip(axes[0], (("tok_per_s", "tokens / s", 1.0), ("mfu", "MFU (%)", 100.0))):
        if _lines(ax, runs, "steps", "step", y, scale):
            ax.set_xlabel("step")
            ax.set_ylabel(label)
        else:
            _no_data(ax, f"no {y} logged")
    return fig


SCHEDULES = (("lr_mult", "learning-rate multiplier"), ("muon_momentum", "Muon momentum"),
             ("balance_gamma", "balance-bias speed γ"), ("epoch", "epoch (tokens / split)"))


def schedules_figure(runs: list[Run]) -> Figure:
    """The schedules the trainer applied (and the data epoch, where the run logs it) against step."""
    fig, axes = _figure(1, len(SCHEDULES), width=3.6)
    for ax, (y, label) in zip(axes[0], SCHEDULES):
        if _lines(ax, runs, "steps", "step", y):
            ax.set_xlabel("step")
            ax.set_ylabel(label)
        else:
            _no_data(ax, f"{y}: not logged by this run")
    return fig


def grad_norm_figure(runs: list[Run]) -> Figure:
    fig, axes = _figure(1, 1, width=6)
    ax = axes[0, 0]
    if _lines(ax, runs, "steps", "step", "grad_norm"):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("gradient norm (before clipping)")
    else:
        _no_data(ax, "no grad_norm logged")
    return fig


def op_profile_figure(run: Run | None, top: int = 14) -> Figure:
    """Where the profiled step's time goes: milliseconds per op, slowest first (the rest summed as 'other')."""
    if run is None:
        return _no_run()
    fig, axes = _figure(1, 1, width=7, height=4.5)
    ax = axes[0, 0]
    prof = run.op_profile()
    if prof is None or not len(prof):
        _no_data(ax, f"{run.name}: no op profile (run.profile_step was 0, or the run has not reached it)")
        return fig
    names, ms = list(prof["op"][:top]), list(prof["seconds"][:top] * 1e3)
    if len(prof) > top:
        names.append("other")
        ms.append(float(prof["seconds"][top:].sum() * 1e3))
    total = float(prof["seconds"].sum() * 1e3)
    y = np.arange(len(names))[::-1]
    ax.barh(y, ms)
    ax.set_yticks(y, names)
    for yi, v in zip(y, ms):
        ax.text(v, yi, f" {100 * v / total:.0f}%", va="center", fontsize="small")
    ev = run.event("op_profile")
    ax.set_xlabel("milliseconds in the profiled step")
    ax.set_title(f"{run.name}: step {ev['step']}, ops {total:.0f} ms of {ev['step_seconds'] * 1e3:.0f} ms")
    return fig


# ---- routing over training ----------------------------------------------------------------------------


def expert_load_figure(run: Run | None) -> Figure:
    """Per MoE layer: each expert's load in each logged step, relative to the mean (1 = balanced)."""
    if run is None:
        return _no_run()
    S, M, E = run.expert_load.shape
    fig, axes = _figure(1, max(M, 1), width=4.5, height=3.4)
    if M == 0 or S == 0:
        _no_data(axes[0, 0], f"{run.name}: no expert load logged")
        return fig
    rel = run.expert_load / np.maximum(run.expert_load.mean(axis=2, keepdims=True), 1e-12)
    steps = run.expert_steps
    for m in range(M):
        ax = axes[0, m]
        im = ax.imshow(rel[:, m, :].T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                       extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, E - 0.5), vmin=0, vmax=max(2.0, rel.max()))
        ax.set_title(f"layer {run.moe_layers[m]}")
        ax.set_xlabel("step")
        ax.set_ylabel("expert")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(im, ax=axes[0, :].tolist(), label="load / mean load")
    return fig


def balance_figure(run: Run | None) -> Figure:
    """Max-violation ((max - mean) / mean load) and dead experts per MoE layer against step."""
    if run is None:
        return _no_run()
    fig, axes = _figure(1, 2)
    S, M, _ = run.expert_load.shape
    if M == 0 or S == 0:
        for ax in axes[0]:
            _no_data(ax, f"{run.name}: no expert load logged")
        return fig
    steps = run.expert_steps
    for m in range(M):
        axes[0, 0].plot(steps, run.max_violation[:, m], label=f"layer {run.moe_layers[m]}")
        axes[0, 1].plot(steps, run.dead_experts[:, m], label=f"layer {run.moe_layers[m]}")
    for ax, label in zip(axes[0], ("max-violation", "dead experts")):
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.legend(fontsize="small")
    return fig


def bias_figure(run: Run | None) -> Figure:
    """The balance biases b_i of every expert (one line each) per MoE layer against step."""
    if run is None:
        return _no_run()
    S, M, E = run.expert_bias.shape
    fig, axes = _figure(1, max(M, 1))
    if M == 0 or S == 0 or np.all(np.isnan(run.expert_bias)):
        _no_data(axes[0, 0], f"{run.name}: no balance biases logged (older runs log only the load)")
        return fig
    steps = run.expert_steps
    for m in range(M):
        ax = axes[0, m]
        for e in range(E):
            ax.plot(steps, run.expert_bias[:, m, e], lw=1)
        ax.set_title(f"layer {run.moe_layers[m]}")
        ax.set_xlabel("step")
        ax.set_ylabel("balance bias")
    return fig


# ---- routing of a checkpoint --------------------------------------------------------------------------


def _no_checkpoint() -> Figure:
    fig, axes = _figure(1, 1)
    _no_data(axes[0, 0], "no checkpoint yet: nothing to route")
    return fig


def coselection_figure(r: Routing | None) -> Figure:
    """Per MoE layer: the fraction of tokens sent to both experts i and j (diagonal blanked)."""
    if r is None:
        return _no_checkpoint()
    co = coselection(r).astype(float) / len(r.ids)
    M, E, _ = co.shape
    fig, axes = _figure(1, M, width=4, height=3.6)
    for m in range(M):
        off = co[m].copy()
        np.fill_diagonal(off, np.nan)
        im = axes[0, m].imshow(off, cmap="magma", interpolation="nearest")
        axes[0, m].set_title(f"layer {r.moe_layers[m]}")
        axes[0, m].set_xlabel("expert j")
        axes[0, m].set_ylabel("expert i")
        fig.colorbar(im, ax=axes[0, m], label="fraction of tokens")
    return fig


def entropy_figure(r: Routing | None) -> Figure:
    """Per MoE layer: the distribution of router entropy over tokens, as a fraction of log E (1 = uniform)."""
    if r is None:
        return _no_checkpoint()
    h = router_entropy(r) / np.log(r.n_experts)
    M = h.shape[0]
    fig, axes = _figure(1, M, width=3.6)
    for m in range(M):
        ax = axes[0, m]
        ax.hist(h[m], bins=30, range=(0, 1))
        ax.axvline(h[m].mean(), color="k", ls="--", label=f"mean {h[m].mean():.3f}")
        ax.set_title(f"layer {r.moe_layers[m]}")
        ax.set_xlabel("router entropy / log E")
        ax.set_ylabel("tokens")
        ax.legend(fontsize="small")
    return fig


def specialisation_figure(r: Routing | None, classes: np.ndarray | None) -> Figure:
    """Per MoE layer: where each token class's routing slots go (rows sum to 1; flat rows: no specialisation).
    classes: the (V,) class index of each token id (analysis.classify_tokens)."""
    if r is None or classes is None:
        return _no_checkpoint()
    spec = specialisation(r, classes)
    present = [c for c in range(len(TOKEN_CLASSES)) if np.any(classes[r.ids] == c)]
    M, _, E = spec.shape
    fig, axes = _figure(1, M, width=4.2, height=0.5 * len(present) + 1.6)
    for m in range(M):
        ax = axes[0, m]
        im = ax.imshow(spec[m, present], aspect="auto", cmap="Blues", vmin=0, interpolation="nearest")
        counts = np.bincount(classes[r.ids], minlength=len(TOKEN_CLASSES))
        ax.set_yticks(range(len(present)), [f"{TOKEN_CLASSES[c]} ({counts[c]})" for c in present])
        ax.set_xlabel("expert")
        ax.set_title(f"layer {r.moe_layers[m]} (uniform: {1 / E:.2f})")
        fig.colorbar(im, ax=ax, label="fraction of the class's slots")
    return fig


def run_figures(runs: list[Run]) -> dict[str, Figure]:
    """Every training-time figure by file stem: the comparisons of all runs, then each run's own."""
    figs = {"loss": loss_figure(runs), "throughput": throughput_figure(runs), "schedules": schedules_figure(runs),
            "grad_norm": grad_norm_figure(runs)}
    for run in runs:
        prefix = f"{run.name}-" if len(runs) > 1 else ""
        figs[prefix + "op_profile"] = op_profile_figure(run)
        figs[prefix + "expert_load"] = expert_load_figure(run)
        figs[prefix + "balance"] = balance_figure(run)
        figs[prefix + "bias"] = bias_figure(run)
    return figs


# ---- research ledger -------------------------------------------------------------------------------------

VERDICT_STYLE = {"keep": ("tab:green", "o"), "discard": ("0.6", "o"), "inconclusive": ("tab:orange", "o"),
                 "crash": ("tab:red", "x"), "running": ("tab:blue", "^")}


def _no_ledger() -> Figure:
    fig, axes = _figure(1, 1)
    _no_data(axes[0, 0], "no ledger yet: start one with `nanowhale research init TAG`")
    return fig


def research_progress_figure(led: ResearchLedger | None) -> Figure:
    """Every experiment in order with the running best (autoresearch's progress plot). Crashes and running
    experiments sit on the top edge; with several agents each agent's experiments get their own marker edge."""
    if led is None:
        return _no_ledger()
    p = progress_table(led)
    fig, axes = _figure(1, 1, width=10, height=4.2)
    ax = axes[0, 0]
    if not len(p):
        _no_data(ax, "no experiment in the ledger yet")
        return fig
    x, y = np.arange(1, len(p) + 1), p["metric"]
    finite = y[~np.isnan(y)]
    top = finite.max() if finite.size else 1.0
    agents = sorted(set(p["agent"]))
    for verdict, (colour, marker) in VERDICT_STYLE.items():
        sel = p["verdict"] == verdict
        if sel.any():
            ys = np.where(np.isnan(y[sel]), top, y[sel])
            ax.scatter(x[sel], ys, c=colour, marker=marker, label=f"{verdict} ({sel.sum()})", zorder=3)
    if len(agents) > 1:  # per-agent view: a ring in the agent's colour around each point
        for i, agent in enumerate(agents):
            sel = p["agent"] == agent
            ax.scatter(x[sel], np.where(np.isnan(y[sel]), top, y[sel]), s=120, facecolors="none",
                       edgecolors=f"C{i}", label=f"agent {agent}", zorder=2)
    base = baseline_mean(led)
    if np.isnan(base):
        ax.step(x, p["running_best"], where="post", color="k", lw=1.5, label="running best")
    else:  # the best starts at the baseline repeats' mean, drawn at experiment 0
        ax.scatter([0], [base], marker="*", s=150, c="k", label="baseline mean", zorder=3)
        ax.step(np.r_[0, x], np.r_[base, p["running_best"]], where="post", color="k", lw=1.5, label="running best")
    ax.set_xlabel("experiment")
    ax.set_ylabel(f"{led.metric_name} (mean over seeds)")
    ax.set_title(f"{len(p)} experiments, best {p['running_best'][-1]:.4f}")
    ax.legend(fontsize="small", ncol=2)
    return fig


def verdict_figure(led: ResearchLedger | None) -> Figure:
    """Experiments per verdict, stacked, one bar per agent (and 'all')."""
    if led is None:
        return _no_ledger()
    t = verdict_table(led)
    fig, axes = _figure(1, 1, width=6)
    ax = axes[0, 0]
    if not t["experiments"].sum():
        _no_data(ax, "no experiment in the ledger yet")
        return fig
    bottom = np.zeros(len(t))
    for verdict, (colour, _) in VERDICT_STYLE.items():
        ax.bar(t["agent"].astype(str), t[verdict], bottom=bottom, color=colour, label=verdict)
        bottom += t[verdict]
    ax.set_ylabel("experiments")
    ax.legend(fontsize="small")
    return fig


def kept_figure(led: ResearchLedger | None) -> Figure:
    """The kept changes ranked by gain (bars) against the noise margin each had to beat (black ticks)."""
    if led is None:
        return _no_ledger()
    k = kept_table(led)
    fig, axes = _figure(1, 1, width=8, height=max(2.5, 0.35 * len(k) + 1.2))
    ax = axes[0, 0]
    if not len(k):
        _no_data(ax, "no kept change yet")
        return fig
    y = np.arange(len(k))[::-1]
    ax.barh(y, k["gain"], color="tab:green", label="gain")
    ax.scatter(k["margin"], y, marker="|", s=300, c="k", label="noise margin", zorder=3)
    ax.set_yticks(y, [f"#{int(i)} {str(d)[:48]}" for i, d in zip(k["id"], k["description"])])
    ax.set_xlabel(f"{led.metric_name} gain over the best it was compared to")
    ax.legend(fontsize="small")
    return fig


def time_control_figure(led: ResearchLedger | None) -> Figure:
    """Throughput against the metric for every finished experiment: a keep must not buy its metric with speed."""
    if led is None:
        return _no_ledger()
    p = progress_table(led)
    fig, axes = _figure(1, 1, width=6.5, height=4.2)
    ax = axes[0, 0]
    ok = ~np.isnan(p["metric"]) & ~np.isnan(p["throughput"]) if len(p) else np.zeros(0, dtype=bool)
    if not ok.any():
        _no_data(ax, "no finished experiment with a throughput yet")
        return fig
    for verdict, (colour, marker) in VERDICT_STYLE.items():
        sel = ok & (p["verdict"] == verdict)
        if sel.any():
            ax.scatter(p["throughput"][sel], p["metric"][sel], c=colour, marker=marker, label=verdict)
    ax.set_xlabel("training tokens / s (mean over seeds)")
    ax.set_ylabel(led.metric_name)
    ax.legend(fontsize="small")
    return fig


def transfer_figure(led: ResearchLedger | None) -> Figure:
    """Each promotion: the start and best commits' means at the larger scale, ± the noise margin."""
    if led is None:
        return _no_ledger()
    t = promotions_table(led)
    fig, axes = _figure(1, 1, width=6.5)
    ax = axes[0, 0]
    if not len(t):
        _no_data(ax, "no promotion yet (`nanowhale research promote`)")
        return fig
    x = np.arange(len(t))
    ax.bar(x - 0.2, t["start_mean"], 0.4, label="start commit")
    ax.bar(x + 0.2, t["best_mean"], 0.4, yerr=t["margin"], capsize=4, label="best commit ± margin")
    ax.set_xticks(x, [f"{a}→{b}\n{v}" for a, b, v in zip(t["from_scale"], t["to_scale"], t["verdict"])])
    lo = np.nanmin(np.concatenate([t["start_mean"], t["best_mean"]]))
    hi = np.nanmax(np.concatenate([t["start_mean"], t["best_mean"]]))
    pad = 0.1 * (hi - lo + 1e-3) + np.nanmax(t["margin"])  # the bars start near the values, not at 0
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(f"{led.metric_name} at the larger scale")
    ax.legend(fontsize="small")
    return fig


def research_figures(led: ResearchLedger | None) -> dict[str, Figure]:
    return {"progress": research_progress_figure(led), "verdicts": verdict_figure(led), "kept": kept_figure(led),
            "time_control": time_control_figure(led), "transfer": transfer_figure(led)}


# ---- post-training -------------------------------------------------------------------------------------


def posttraining_figure(chain: list[Run], max_panels: int = 8, cols: int = 4) -> Figure:
    """For each post-training stage of the lineage, what it logged (analysis.stage_metrics, the learning
    signals first) against step: up to max_panels panels per stage, `cols` to a row."""
    stages = [r for r in chain if stage_of(r) != "base"]
    if not stages:
        fig, axes = _figure(1, 1)
        _no_data(axes[0, 0], "no post-training stage yet" if chain else "no lineage yet")
        return fig
    tables = [stage_metrics(r) for r in stages]
    keys = [[k for k in t.names if k != "step"][:max_panels] for t in tables]
    rows = [max(1, -(-len(k) // cols)) for k in keys]  # ceil
    fig, axes = _figure(sum(rows), cols, width=3.4, height=2.8)
    row0 = 0
    for run, t, ks, n_rows in zip(stages, tables, keys, rows):
        for i in range(n_rows * cols):
            ax = axes[row0 + i // cols, i % cols]
            if i >= len(ks):
                ax.set_axis_off()
                continue
            ok = ~np.isnan(t[ks[i]])
            ax.plot(t["step"][ok], t[ks[i]][ok], marker="o" if ok.sum() < 12 else None)
            ax.set_title(f"{stage_of(run)} ({run.name}): {ks[i]}", fontsize="medium")
            ax.set_xlabel("step")
        if not ks:
            axes[row0, 0].set_axis_on()
            _no_data(axes[row0, 0], f"{run.name}: no metrics logged yet")
        row0 += n_rows
    return fig
