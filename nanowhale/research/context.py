"""The research state a command works in: the repository, its ledger, the current tag's settings, and the
training of one run in a subprocess (timeout, memory limit, log) shared by baseline, run and promote."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nanowhale.research import stats
from nanowhale.research.build import BuildSetup
from nanowhale.research.gitops import Git
from nanowhale.research.ladder import Rung, load_ladder, parse_budget, rung
from nanowhale.research.ledger import Ledger
from nanowhale.research.worker import BOOTSTRAP

RESEARCH_DIR = "research"
EXPERIMENT_CONFIG = "research/experiment.toml"
LEDGER_FILE = "research/ledger.sqlite"
LEDGER_POINTER = "research/ledger.url"  # git-ignored: where this worktree's ledger is, when not LEDGER_FILE
BRANCH_PREFIX = "research/"
LOG_TAIL_LINES = 40


_BRANCH_AGENT: list[str] = []  # the agent a swarm worktree's branch names (research/TAG/NAME), once opened


def agent_id() -> str:
    """Who writes the ledger rows: the swarm agent of the worktree, else $NANOWHALE_AGENT, else 'agent0'."""
    return _BRANCH_AGENT[-1] if _BRANCH_AGENT else os.environ.get("NANOWHALE_AGENT", "agent0")


def ledger_location(repo: Path) -> str | Path:
    """The ledger a repository's research uses: the one its pointer file names (a shared SQLite file or a
    postgresql:// URL, written by `init --ledger` and `join`), else research/ledger.sqlite in the repository."""
    pointer = repo / LEDGER_POINTER
    if pointer.exists():
        where = pointer.read_text().strip()
        return where if where.startswith(("postgresql://", "postgres://")) else Path(where)
    return repo / LEDGER_FILE


@dataclass
class Context:
    repo: Path
    git: Git
    ledger: Ledger
    tag: str
    s: dict                 # the tag's settings (see init); in a swarm worktree, branch and build are the agent's
    agent: str = ""         # who writes the rows (agent_id())
    swarm: dict | None = None  # the tag's swarm settings in a swarm worktree (swarm.py), else None

    @staticmethod
    def open(path: str | Path = ".", tag: str | None = None) -> "Context":
        repo = Git.toplevel(path)
        git = Git(repo)
        _BRANCH_AGENT.clear()
        led = Ledger.open(ledger_location(repo), create=False)
        if tag is None:
            branch = git.branch()
            if not branch.startswith(BRANCH_PREFIX):
                raise ValueError(f"on branch {branch!r}, not a research branch; `git checkout {BRANCH_PREFIX}TAG` "
                                 "(or start one with `nanowhale research init TAG`)")
            tag = branch[len(BRANCH_PREFIX):]
        s = led.get(f"tag/{tag}")
        swarm = None
        if s is None and "/" in tag:  # research/TAG/NAME: agent NAME of a swarm on TAG
            tag, agent = tag.split("/", 1)
            s, swarm = led.get(f"tag/{tag}"), led.get(f"swarm/{tag}")
            if s is not None and swarm is not None:
                from nanowhale.research import machine  # this agent's machine, not the one init ran on

                s = dict(s, branch=git.branch(), build=BuildSetup.detect_or_none(repo).to_dict(),
                         machine=machine.facts(int(s["threads"])))
                _BRANCH_AGENT.append(agent)
        if s is None:
            raise ValueError(f"research tag {tag!r} is not in the ledger {led.where}")
        return Context(repo, git, led, tag, s, agent_id(), swarm)

    @property
    def build(self) -> BuildSetup:
        return BuildSetup.from_dict(self.s["build"])

    def ladder(self) -> list[Rung]:
        return load_ladder(self.s["ladder"])

    def rung(self, name: str | None = None) -> Rung:
        return rung(self.ladder(), name or self.s["scale"])

    # ---- what decisions compare against ----
    def baseline_rows(self) -> list[dict]:
        return self.ledger.rows("baselines", "tag = ? AND role = 'baseline' AND status = 'done'", (self.tag,))

    def experiments(self, columns: tuple[str, ...] | None = None) -> list[dict]:
        return self.ledger.rows("experiments", "tag = ?", (self.tag,), columns=columns)

    def best(self) -> dict | None:
        """The last kept experiment (None: the baseline is the best)."""
        keeps = self.ledger.rows("experiments", "tag = ? AND verdict = 'keep'", (self.tag,), order="id DESC LIMIT 1")
        return keeps[0] if keeps else None

    def noise(self) -> dict:
        rows = self.baseline_rows()
        if not rows:
            raise ValueError("no baseline yet: run `nanowhale research baseline` first")
        m = [r["metric"] for r in rows]
        tp = [r["throughput"] for r in rows]
        return {"r": len(rows), "mean": stats.mean_std(m)[0], "sigma": stats.metric_sigma(m),
                "sigma_raw": stats.mean_std(m)[1], "throughput": stats.mean_std(tp)[0],
                "throughput_sigma": stats.throughput_sigma(tp, self.s.get("throughput_floor", stats.THROUGHPUT_SIGMA_FLOOR)), "metric_values": m, "throughput_values": tp}

    def reference(self) -> tuple[stats.Reference, dict | None]:
        noise = self.noise()
        best = self.best()
        if best is None:
            return stats.Reference(noise["mean"], noise["throughput"], noise["r"], noise["sigma"],
                                   noise["throughput_sigma"]), None
        here = self.remeasured(best)
        if here:  # a swarm agent on another kind of machine than the keeper's: the best as measured here
            return stats.Reference(sum(here) / len(here), best["throughput_mean"], len(here), noise["sigma"],
                                   noise["throughput_sigma"]), best
        return stats.Reference(best["metric_mean"], best["throughput_mean"], len(best["metric_values"]),
                               noise["sigma"], noise["throughput_sigma"]), best

    def remeasured(self, best: dict) -> list[float]:
        """This swarm agent's own measurements of the best commit (`sync` makes them when the best was measured
        on another kind of machine); empty otherwise."""
        if self.swarm is None:
            return []
        rows = self.ledger.rows("baselines", "tag = ? AND role = 'remeasure' AND commit_sha = ? AND agent = ? AND "
                                "status = 'done'", (self.tag, best["commit_sha"], self.agent))
        return [r["metric"] for r in rows]

    def best_commit(self) -> str:
        best = self.best()
        return best["commit_sha"] if best else self.s["start_commit"]

    # ---- one training run ----
    def timeout(self) -> float:
        if self.s.get("timeout_s"):
            return float(self.s["timeout_s"])
        rows = self.baseline_rows()
        if not rows:
            return 3600.0
        slowest = max((r["train_seconds"] or 0) + (r["eval_seconds"] or 0) for r in rows)
        return 4 * slowest + 120  # a slow neighbour may slow a run down; a hang may not last forever

    def run_dir(self, name: str) -> Path:
        """research/runs/NAME, empty."""
        run_dir = self.repo / RESEARCH_DIR / "runs" / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        return run_dir

    def spec(self, run_dir: Path, seed: int, rung_: Rung | None = None, budget: str | None = None,
             experiment_config: Path | None = None) -> dict:
        """The worker's spec (worker.resolve_spec) of a run at the rung, under the harness's forced keys."""
        rung_ = rung_ or self.rung()
        kind, amount = parse_budget(budget or self.s["budget"])
        forced = [f"run.dir={json.dumps(str(run_dir / 'run'))}", "sample.n=0", "eval.every=0",
                  f"eval.tokens={rung_.eval_tokens}", "run.checkpoint_every=0", "run.keep=1", "run.log_every=1",
                  f"train.seed={seed}", f"train.threads={int(self.s['threads'])}",
                  f"data.dir={json.dumps(self.s['data_dir'])}"]
        if self.s.get("vocab_size"):  # the data's tokenizer fixes it (the agent's config need not)
            forced.append(f"model.vocab_size={int(self.s['vocab_size'])}")
        return {"preset": rung_.preset, "rung_overrides": rung_.overrides(),
                "experiment_config": str(experiment_config or self.repo / EXPERIMENT_CONFIG), "forced": forced,
                "budget_kind": kind, "budget_amount": amount}

    def resolve(self, experiment: dict | None = None, rung_: Rung | None = None, budget: str | None = None):
        """The RunConfig a run at the rung trains: the experiment config given as a dict (None: the working
        tree's research/experiment.toml; {}: the rung's own config), under the harness's forced keys."""
        from nanowhale.research.worker import resolve_spec

        spec = self.spec(self.repo / RESEARCH_DIR / "runs" / "resolve", 0, rung_, budget)
        if experiment is not None:
            spec["experiment"] = experiment
        return resolve_spec(spec)

    def train_one(self, name: str, seed: int, rung_: Rung | None = None, heldout: bool = False,
                  budget: str | None = None, experiment: dict | None = None) -> dict:
        """Trains the working tree's code and experiment config (or `experiment`, a dict) for one seed; the
        worker's result dict plus 'status' (done | crash | timeout | diverged) and 'log_tail' on failure."""
        rung_ = rung_ or self.rung()
        run_dir = self.run_dir(name)
        spec = self.spec(run_dir, seed, rung_, budget)
        if experiment is not None:
            spec["experiment"] = experiment
        spec.update(heldout=heldout, entry=self.s["entry"])
        (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
        out = run_dir / "result.json"
        log = run_dir / "train.log"
        env = dict(os.environ, NANOWHALE_RESEARCH_REPO=str(self.repo), PYTHONUNBUFFERED="1")
        mem = int(self.s["memory_mb"]) * 1024 * 1024

        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))

        t0 = time.perf_counter()
        status = None
        with open(log, "w") as f:
            p = subprocess.Popen([sys.executable, "-c", BOOTSTRAP, str(run_dir / "spec.json"), str(out)],
                                 cwd=self.repo, env=env, stdout=f, stderr=subprocess.STDOUT, preexec_fn=limit,
                                 start_new_session=True)
            try:
                p.wait(timeout=self.timeout())
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()
                status = "timeout"
            except BaseException:  # interrupted: the run is in its own session, so end it here
                os.killpg(p.pid, 9)
                p.wait()
                raise
        wall = time.perf_counter() - t0
        result = json.loads(out.read_text()) if out.exists() else {}
        if status is None:
            status = result.get("status", "crash") if p.returncode in (0, 1) and result else "crash"
            if status == "stopped":
                status = "crash"
        result["status"] = status
        result["wall_seconds"] = wall
        # time control's measure: the median step's speed when the entry reports it, else the run's mean
        result["throughput"] = result.get("step_tokens_per_second") or result.get("tokens_per_second") or 0.0
        metric = result.get(self.s["metric"])
        if status == "done" and not (isinstance(metric, (int, float)) and metric == metric
                                     and abs(metric) != float("inf")):
            result["status"] = status = "crash"
            result["reason"] = f"metric {self.s['metric']} is {metric!r}"
        if status != "done":
            lines = log.read_text(errors="replace").splitlines()
            result["log_tail"] = "\n".join(lines[-LOG_TAIL_LINES:])
        shutil.rmtree(run_dir / "run" / "checkpoints", ignore_errors=True)  # keep logs and metrics, not weights
        return result
