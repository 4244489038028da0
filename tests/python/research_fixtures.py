"""A small research ledger with known numbers: 3 baseline repeats, 7 experiments by two agents (keeps,
discards, an inconclusive one, a crash) and one promotion under the current tag 'night1', plus one experiment
of an older tag, written through nanowhale.research.ledger as `nanowhale research` lays it out."""

from __future__ import annotations

from pathlib import Path

from nanowhale.research.ledger import Ledger

BASELINE = (2.010, 2.000, 2.020)  # mean 2.01
# (agent, description, metric_mean, throughput_mean, margin, best_metric, best_throughput, verdict)
EXPERIMENTS = (
    ("a0", "lower the muon lr", 1.990, 8000.0, 0.010, 2.010, 8100.0, "keep"),       # gain 0.020
    ("a0", "more experts", 1.995, 6000.0, 0.010, 1.990, 8000.0, "discard"),         # slower
    ("a1", "qk-norm scale", 1.960, 8050.0, 0.012, 1.990, 8000.0, "keep"),           # gain 0.030
    ("a1", "drop the shared expert", None, None, None, 1.960, 8050.0, "crash"),
    ("a0", "warmup 5%", 1.958, 8040.0, 0.012, 1.960, 8050.0, "inconclusive"),
    ("a1", "relu^2", 1.950, 8100.0, 0.005, 1.960, 8050.0, "keep"),                 # gain 0.010
    ("a0", "bigger batch", 1.990, 8200.0, 0.010, 1.950, 8100.0, "discard"),
)


def write_ledger(path: Path) -> Path:
    led = Ledger.open(path)
    # settings as `nanowhale research init` writes them: one dict per tag, and the current tag
    led.set(**{"tag/night1": {"tag": "night1", "scale": "tiny", "budget": "flops:1e12", "metric": "val_bpb",
                              "direction": "lower", "k": 2.0, "start_commit": "base"}, "current": "night1"})
    common = {"tag": "night1", "scale": "tiny", "budget": "flops:1e12", "metric_name": "val_bpb"}
    for i, m in enumerate(BASELINE):
        led.insert("baselines", {**common, "agent": "a0", "created_at": 1000.0 + i, "role": "baseline",
                                 "commit_sha": "base", "seed": i, "metric": m, "throughput": 8100.0, "status": "done"})
    for i, (agent, desc, m, tput, margin, best, best_tput, verdict) in enumerate(EXPERIMENTS):
        led.insert("experiments", {**common, "agent": agent, "started_at": 3600.0 * (1 + i), "finished_at":
                                   3600.0 * (1 + i) + 600, "base_commit": "base", "description": desc, "seeds": [0],
                                   "direction": "lower", "metric_values": None if m is None else [m],
                                   "metric_mean": m, "throughput_mean": tput, "margin": margin, "best_metric": best,
                                   "best_throughput": best_tput, "status": "crash" if m is None else "done",
                                   "verdict": verdict, "commit_sha": f"c{i}" if verdict == "keep" else None})
    led.insert("experiments", {"agent": "a0", "tag": "older", "started_at": 0.0, "finished_at": 1.0,  # another tag
                               "base_commit": "x", "description": "an older session", "scale": "tiny",
                               "budget": "flops:1e12", "seeds": [0], "metric_name": "val_bpb", "direction": "lower",
                               "metric_mean": 1.0, "best_metric": 2.0, "status": "done", "verdict": "keep"})
    led.insert("promotions", {"agent": "a0", "tag": "night1", "created_at": 40000.0, "from_scale": "tiny",
                              "to_scale": "small", "start_commit": "base", "best_commit": "c5", "repeats": 2,
                              "start_mean": 1.80, "best_mean": 1.76, "margin": 0.01, "verdict": "transferred"})
    led.close()
    return path
