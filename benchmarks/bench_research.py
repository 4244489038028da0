"""The research loop's own costs: `run` overhead, one-file incremental rebuild, `status` with 1,000 rows.

    python benchmarks/bench_research.py --ledger research/ledger.sqlite   # overhead of recorded experiments
    python benchmarks/bench_research.py --rebuild --repeats 3             # in an editable checkout
    python benchmarks/bench_research.py --status --rows 1000

Overhead: for each recorded experiment, everything in `run` except training and evaluation (git, the
protected-file check, the (no-op or real) rebuild, subprocess start, imports, data setup, checkpoint, ledger)
as a fraction of the experiment's wall time; medians. Rebuild: touch csrc/model/model.cpp, then the
incremental rebuild and the time until a training step has run in a fresh process, side by side with the
no-change rebuild (the floor); medians of --repeats. Status: a throwaway repo with a ledger of --rows
experiments, `nanowhale research status` as a subprocess (what an agent pays) and summary() in process,
side by side with `git log -1` (a command every loop runs anyway); medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def overhead(ledger: str) -> None:
    from nanowhale.research.ledger import load_rows

    rows = [e for e in load_rows(ledger)["experiments"] if e["status"] == "done" and e["total_seconds"]]
    if not rows:
        raise SystemExit(f"{ledger}: no finished experiments")
    fr, sec, reb, tr = [], [], [], []
    for e in rows:
        o = e["total_seconds"] - e["train_seconds"] - e["eval_seconds"]
        fr.append(o / e["total_seconds"])
        sec.append(o)
        reb.append(e["rebuild_seconds"] or 0.0)
        tr.append(e["train_seconds"] + e["eval_seconds"])
    print(f"experiments: {len(rows)}")
    print(f"median_train_plus_eval_s: {statistics.median(tr):.1f}")
    print(f"median_overhead_s: {statistics.median(sec):.1f} (of which rebuild {statistics.median(reb):.1f})")
    print(f"median_overhead_fraction: {statistics.median(fr):.3f}")
    print(f"max_overhead_fraction: {max(fr):.3f}")


FIRST_STEP = ("import time, numpy as np, nanowhale as nw; t=time.perf_counter(); "
              "m=nw.Model(nw.ModelConfig.preset('tiny'), seed=0); x=np.zeros((2, 256), dtype=np.int64); "
              "m.forward_backward(x, x); print(time.perf_counter()-t)")


def rebuild(repeats: int, repo: Path) -> None:
    from nanowhale.research.build import detect, rebuild as do_rebuild

    setup = detect(repo)
    do_rebuild(setup)
    noop, one, start = [], [], []
    target = repo / "csrc" / "model" / "model.cpp"
    for _ in range(repeats):
        t = time.perf_counter()
        r = do_rebuild(setup)
        noop.append(time.perf_counter() - t)
        assert r.ok and not r.rebuilt, r.log
        os.utime(target)
        t = time.perf_counter()
        r = do_rebuild(setup)
        one.append(time.perf_counter() - t)
        assert r.ok and r.rebuilt and "model.cpp" in r.log, r.log
        subprocess.run([sys.executable, "-c", FIRST_STEP], check=True, capture_output=True, cwd="/")
        start.append(time.perf_counter() - t)
    print(f"no_change_rebuild_s: {statistics.median(noop):.2f}")
    print(f"one_file_rebuild_s: {statistics.median(one):.1f} (model.cpp, {repeats} repeats)")
    print(f"rebuild_to_first_step_s: {statistics.median(start):.1f}")


def status(rows: int, repeats: int) -> None:
    from nanowhale.research import report
    from nanowhale.research.context import Context
    from nanowhale.research.ledger import Ledger

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        subprocess.run(["git", "init", "-q", "-b", "research/bench"], cwd=repo, check=True)
        subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "--allow-empty", "-m", "x"],
                       cwd=repo, check=True)
        led = Ledger.open(repo / "research" / "ledger.sqlite")
        led.set(**{"tag/bench": {"tag": "bench", "branch": "research/bench", "scale": "tiny", "budget": "flops:5e12",
                                 "metric": "val_bpb", "direction": "lower", "k": 2.0, "start_commit": "0" * 40,
                                 "throughput_floor": 0.005}})
        for s in range(3):
            led.insert("baselines", {"agent": "a", "tag": "bench", "created_at": 0.0, "role": "baseline",
                                     "commit_sha": "0" * 40, "scale": "tiny", "budget": "flops:5e12", "seed": s,
                                     "metric_name": "val_bpb", "metric": 2.0 + 0.003 * s, "throughput": 8000.0 + 100 * s,
                                     "status": "done"})
        diff = "".join(f"+ line {i} of a typical diff\n" for i in range(60))
        with led.transaction() as conn:  # one transaction: the setup, not what is measured
            for i in range(rows):
                v = ("keep", "discard", "discard", "inconclusive", "crash")[i % 5]
                conn.execute(
                    "INSERT INTO experiments (agent, tag, started_at, base_commit, commit_sha, description, code_diff, "
                    "config_diff, scale, budget, seeds, metric_name, direction, metric_values, metric_mean, "
                    "throughput_values, throughput_mean, total_seconds, status, verdict, reason) VALUES "
                    "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    ("a", "bench", float(i), "0" * 40, "1" * 40 if v == "keep" else None, f"idea {i}", diff, diff,
                     "tiny", "flops:5e12", "[0]", "val_bpb", "lower", json.dumps([2.0 - i * 1e-5]), 2.0 - i * 1e-5,
                     "[8000]", 8000.0, 90.0, "crash" if v == "crash" else "done", v, "numbers"))
        cli, inproc, ref = [], [], []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "nanowhale.cli", "research", "status"], cwd=repo, check=True,
                           capture_output=True)
            cli.append(time.perf_counter() - t)
            t = time.perf_counter()
            report.summary(Context.open(repo))
            inproc.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(["git", "log", "-1"], cwd=repo, check=True, capture_output=True)
            ref.append(time.perf_counter() - t)
        print(f"rows: {rows}")
        print(f"status_cli_s: {statistics.median(cli):.3f} (median of {repeats}; includes Python start and imports)")
        print(f"status_summary_in_process_s: {statistics.median(inproc):.4f}")
        print(f"reference_git_log_s: {statistics.median(ref):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ledger", help="a ledger with finished experiments: the loop's overhead")
    ap.add_argument("--rebuild", action="store_true", help="one-file rebuild in this editable checkout")
    ap.add_argument("--repo", default=".", help="the checkout for --rebuild")
    ap.add_argument("--status", action="store_true")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if not (a.ledger or a.rebuild or a.status):
        ap.error("choose --ledger, --rebuild and/or --status")
    if a.ledger:
        overhead(a.ledger)
    if a.rebuild:
        rebuild(a.repeats, Path(a.repo).resolve())
    if a.status:
        status(a.rows, a.repeats)


if __name__ == "__main__":
    main()
