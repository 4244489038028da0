"""`nanowhale research ...`: the commands an agent drives (agent_recipes/pretrain.md)."""

from __future__ import annotations

import argparse


def _init(a):
    from nanowhale.research.commands import init

    return init(a.tag, scale=a.scale, budget=a.budget, data=a.data or "", ladder=a.ladder, metric=a.metric,
                direction=a.direction, k=a.k, throughput_floor=a.throughput_floor, threads=a.threads, timeout_s=a.timeout, memory_mb=a.memory_mb,
                entry=a.entry, pairs=a.pairs, probe_steps=a.probe_steps, ledger_url=a.ledger,
                free_size=a.free_size, time_margin=a.time_margin)


def _baseline(a):
    from nanowhale.research.commands import baseline

    return baseline(a.repeats)


def _check(a):
    from nanowhale.research.check import run_check

    return run_check(full=a.full)


def _run(a):
    from nanowhale.research.commands import run

    return run(a.m, seeds=a.seeds)


def _status(a):
    from nanowhale.research.report import status

    return status(as_json=a.json, tsv=a.tsv, last=a.last, tag=a.tag)


def _show(a):
    from nanowhale.research.report import show

    return show(a.id, diff_only=a.diff)


def _plot(a):
    from nanowhale.research.report import plot

    return plot(a.out, a.ledger, a.dpi)


def _promote(a):
    from nanowhale.research.commands import promote

    return promote(a.to, a.repeats, a.budget)


def _join(a):
    from nanowhale.research.swarm import join

    return join(a.tag, a.agent, directory=a.dir, remote=a.remote, ledger_url=a.ledger, slots=a.slots,
                build=not a.no_build)


def _claim(a):
    from nanowhale.research.swarm import claim

    return claim(a.idea, tags=[t for t in (a.tags or "").split(",") if t], lease_seconds=a.lease)


def _sync(a):
    from nanowhale.research.swarm import sync

    return sync()


def _merge(a):
    from nanowhale.research.swarm import merge

    return merge(seeds=a.seeds)


def add_research(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("research", help="the autoresearch loop: an agent edits, the harness measures and decides",
                       description="Run inside a git clone of nanowhale installed with "
                       "`pip install --no-build-isolation -Cbuild-dir=build/dev -e .`. See agent_recipes/.")
    rs = r.add_subparsers(dest="research_command", required=True)

    p = rs.add_parser("init", help="start research branch research/TAG with an experiment config and a ledger")
    p.add_argument("tag")
    p.add_argument("--scale", default="tiny", help="a rung of the ladder (default tiny)")
    p.add_argument("--budget", help="flops:AMOUNT | tokens:AMOUNT | time:SECONDS (default: the rung's; FLOPs on CPU, time on a GPU)")
    p.add_argument("--data", help="a prepared data directory (default: the offline default corpus)")
    p.add_argument("--ladder", help="a ladder TOML file (default: nanowhale/research/ladder.toml)")
    p.add_argument("--metric", default="val_bpb", help="the summary key scored (default val_bpb)")
    p.add_argument("--direction", default="lower", choices=("lower", "higher"))
    p.add_argument("-k", type=float, default=2.0, help="noise margin in sigmas (default 2)")
    p.add_argument("--throughput-floor", type=float, default=0.005,
                   help="throughput sigma is at least this fraction of its mean (raise it on a busy shared machine)")
    p.add_argument("--pairs", type=int, default=5,
                   help="--metric paired_tokens_per_second: best/candidate probe pairs per run (default 5)")
    p.add_argument("--probe-steps", type=int, default=8,
                   help="--metric paired_tokens_per_second: optimizer steps per probe, 2 of them warm-up (default 8)")
    p.add_argument("--free-size", action="store_true",
                   help="do not lock the rung's size class (active parameters, FLOPs/token): find the best size for "
                   "this budget; such keeps do not promote")
    p.add_argument("--time-margin", type=float, default=0.05,
                   help="time control: a would-be keep is discarded only when its step is slower than the best's by "
                   "more than this fraction, beyond the noise of the paired probe (default 0.05)")
    p.add_argument("--threads", type=int, default=0, help="training threads (default: all cores)")
    p.add_argument("--timeout", type=float, default=0.0, help="seconds per training run (default: 4x the slowest baseline + 120)")
    p.add_argument("--memory-mb", type=int, default=16000, help="address-space limit of a training run")
    p.add_argument("--ledger", help="a shared ledger: a SQLite file path or postgresql://USER@HOST/DB for agents on "
                   "several machines (default: research/ledger.sqlite in this repository)")
    p.add_argument("--entry", default="nanowhale.research.worker:pretrain",
                   help="MODULE:FUNCTION(spec) -> summary dict that trains one run (post-training recipes use their own)")
    p.set_defaults(func=_init)

    p = rs.add_parser("baseline", help="the unchanged experiment N times with different seeds: the noise floor")
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=_baseline)

    p = rs.add_parser("check", help="rebuild, whole-model float64 gradient check, determinism (seconds)")
    p.add_argument("--full", action="store_true", help="also the C++ (ctest) and Python (pytest) suites")
    p.set_defaults(func=_check)

    p = rs.add_parser("run", help="one experiment: rebuild, train, score, keep (commit) or discard (restore)")
    p.add_argument("-m", required=True, help="what you changed and why")
    p.add_argument("--seeds", type=int, default=1,
                   help="run up to K seeds while the result is inside the noise (paired speed: init --pairs instead)")
    p.set_defaults(func=_run)

    p = rs.add_parser("join", help="a swarm agent: worktree and branch research/TAG/AGENT at the global best, shared ledger")
    p.add_argument("tag")
    p.add_argument("--agent", required=True, help="the agent's name (on every ledger row it writes)")
    p.add_argument("--dir", help="the worktree (default: beside the repository, REPO-TAG-AGENT)")
    p.add_argument("--remote", help="git remote (bare repo path or URL) the kept code travels through; set by the "
                   "first join (default: a bare repo beside a SQLite ledger)")
    p.add_argument("--ledger", help="the shared ledger (default: this repository's)")
    p.add_argument("--slots", type=int, default=0,
                   help="runs at once on a machine (default: one per GPU, or per `threads` CPU cores)")
    p.add_argument("--no-build", action="store_true", help="only copy the built module: no build directory, so the "
                   "first run compiles nothing and C++ changes are not rebuilt (config and Python research)")
    p.set_defaults(func=_join)

    p = rs.add_parser("claim", help="say what you are about to try; flags a claim like an earlier claim or experiment")
    p.add_argument("idea")
    p.add_argument("--tags", help="comma-separated labels, e.g. lr,schedule")
    p.add_argument("--lease", type=float, default=1800.0,
                   help="seconds the claim lives without a sign of life from you (default 1800)")
    p.set_defaults(func=_claim)

    p = rs.add_parser("sync", help="move to the global best; your change in progress is re-applied on top of it")
    p.set_defaults(func=_sync)

    p = rs.add_parser("merge", help="re-run every agent's stale winners on the global best, best first; keep what helps")
    p.add_argument("--seeds", type=int, default=1)
    p.set_defaults(func=_merge)

    p = rs.add_parser("status", help="best so far, lineage, noise floor, counts, the last experiments")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tsv", action="store_true", help="autoresearch's results.tsv columns")
    p.add_argument("--last", type=int, default=10)
    p.add_argument("--tag", help="another tag than the current branch's")
    p.set_defaults(func=_status)

    p = rs.add_parser("show", help="one experiment with its diff")
    p.add_argument("id", type=int)
    p.add_argument("--diff", action="store_true", help="only the diff (pipe it to `git apply`)")
    p.set_defaults(func=_show)

    p = rs.add_parser("plot", help="research/progress.png and the ledger figures of notebooks/research.ipynb")
    p.add_argument("ledger", nargs="?", help="only the ledger figures of this ledger file or directory (default: "
                   "the current research branch's ledger, plus progress.png)")
    p.add_argument("--out", help="directory of the ledger figures (default: plots/ beside the ledger)")
    p.add_argument("--dpi", type=int, default=100)
    p.set_defaults(func=_plot)

    p = rs.add_parser("promote", help="start vs best commit at the next rung of the ladder: does the gain transfer?")
    p.add_argument("--to", help="a rung (default: the next one)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--budget", help="instead of the rung's budget from the ladder file (e.g. a shorter one on a busy machine)")
    p.set_defaults(func=_promote)


__all__ = ["add_research"]
