"""Several agents on one research tag (nanowhale/research/swarm.py), end to end in a throwaway repository
(research_repo_fixtures.py). Training is replaced by an entry (`init --entry`) whose metric is a known
function of three knob files, so each scenario runs in seconds and its verdicts are known in advance:

    val_bpb = 2 - 0.10 x - 0.06 y - 0.05 z + 0.10 x y    (+ 1e-4 per seed: a noise floor)

x, y and z each beat the baseline alone; y stops helping once x is in (x and y interact), z still helps."""

import json
import os
import subprocess
import sys
import time

import pytest

from nanowhale.research import commands, report, swarm
from nanowhale.research.context import Context
from nanowhale.research.ledger import load_rows
from research_repo_fixtures import git, make_research_repo
from test_research_loop import Log

ENTRY = '''
import os, time
from pathlib import Path


def knob(name):
    p = Path("knobs") / name
    return float(p.read_text()) if p.exists() else 0.0


def fake(spec):
    hold = os.environ.get("SWARM_TEST_HOLD")
    while hold and not Path(hold).exists():  # the test decides when this run ends
        time.sleep(0.01)
    time.sleep(float(os.environ.get("SWARM_TEST_TRAIN_SECONDS", "0")))
    seed = int(next(f for f in spec["forced"] if f.startswith("train.seed=")).split("=")[1])
    x, y, z = knob("x"), knob("y"), knob("z")
    machine = float(os.environ.get("SWARM_TEST_MACHINE_OFFSET", "0"))  # another kind of machine reads differently
    return {"status": "done", "val_bpb": 2 - 0.10 * x - 0.06 * y - 0.05 * z + 0.10 * x * y + 1e-4 * seed + machine,
            "tokens_per_second": 1000.0, "training_seconds": 0.01, "eval_seconds": 0.0, "steps": 1, "tokens": 1}
'''


def make_tag_repo(tmp_path, ledger_url=None):
    """A repository with research tag t1 initialised (fake entry) and its 3-seed baseline."""
    repo = make_research_repo(tmp_path, 100)
    (repo / "swarm_entry.py").write_text(ENTRY)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "fake entry")
    assert commands.init("t1", scale="micro", ladder=str(repo / "ladder.toml"), threads=1, entry="swarm_entry:fake",
                         ledger_url=ledger_url, path=repo, log=Log()) == 0
    assert commands.baseline(repeats=3, path=repo, log=Log()) == 0
    return repo


@pytest.fixture
def tag_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOWHALE_SLOT_DIR", str(tmp_path / "slots"))
    return make_tag_repo(tmp_path)


def join(repo, agent, slots=0, remote=None):
    log = Log()
    assert swarm.join("t1", agent, slots=slots, remote=remote, path=repo, log=log) == 0
    return repo.parent / f"{repo.name}-t1-{agent}"


def knob(wt, name, value=1):
    (wt / "knobs").mkdir(exist_ok=True)
    (wt / "knobs" / name).write_text(str(value))


def run(wt, message):
    log = Log()
    assert commands.run(message, path=wt, log=log) == 0, log.lines
    return log


def cli(wt, *args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "nanowhale.cli", "research", *args], cwd=wt, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, **kw)


def rows(repo, table="experiments"):
    return load_rows(repo / "research" / "ledger.sqlite")[table]


def test_a_keep_moves_the_baseline_of_the_other_agent(tag_repo):
    a_keep_moves_the_baseline_of_the_other_agent(tag_repo, rows=rows)


def test_the_same_swarm_on_a_postgres_ledger(postgres_url, tmp_path, monkeypatch):
    """Agents on several machines: the ledger in PostgreSQL, the code through a bare repository URL."""
    import psycopg

    monkeypatch.setenv("NANOWHALE_SLOT_DIR", str(tmp_path / "slots"))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE swarm_t1")
    url = postgres_url.rsplit("/", 1)[0] + "/swarm_t1"
    try:
        repo = make_tag_repo(tmp_path, ledger_url=url)
        remote = tmp_path / "shared.git"
        git(tmp_path, "init", "-q", "--bare", str(remote))
        with pytest.raises(ValueError, match="give --remote"):
            swarm.join("t1", "a", path=repo, log=Log())
        a_keep_moves_the_baseline_of_the_other_agent(repo, rows=lambda _, table="experiments": load_rows(url)[table],
                                                     remote=f"file://{remote}")
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE swarm_t1 WITH (FORCE)")


def a_keep_moves_the_baseline_of_the_other_agent(repo, rows, remote=None):
    wa, wb = join(repo, "a", remote=remote), join(repo, "b")
    assert git(wa, "rev-parse", "--abbrev-ref", "HEAD").strip() == "research/t1/a"
    knob(wa, "x")
    assert run(wa, "knob x").value("verdict") == "keep"
    a_row = rows(repo)[-1]
    assert a_row["agent"] == "a" and a_row["metric_mean"] == pytest.approx(1.9)
    knob(wb, "y")  # beats the baseline (2.0 -> 1.94), not a's best
    with pytest.raises(ValueError, match=f"global best moved to experiment {a_row['id']} by a.*research sync"):
        commands.run("knob y", path=wb, log=Log())
    log = Log()
    assert swarm.sync(path=wb, log=log) == 0
    assert "re-applied" in log.value("change")
    assert git(wb, "rev-parse", "HEAD").strip() == a_row["commit_sha"]
    assert (wb / "knobs" / "x").exists() and (wb / "knobs" / "y").exists()
    assert run(wb, "knob y").value("verdict") == "discard"
    b_row = rows(repo)[-1]
    assert b_row["agent"] == "b" and b_row["best_metric"] == pytest.approx(1.9) and b_row["parent_id"] == a_row["id"]
    assert not (wb / "knobs" / "y").exists()
    assert [b["agent"] for b in rows(repo, "baselines")] == ["agent0"] * 3
    (sync_event,) = [e for e in rows(repo, "events") if e["kind"] == "sync"]
    assert sync_event["agent"] == "b" and sync_event["detail"]["to"] == a_row["commit_sha"]


def test_sync_reapplies_a_stale_result_and_reports_a_conflict(tag_repo, tmp_path):
    repo = tag_repo
    wa, wb = join(repo, "a", slots=2), join(repo, "b")
    release = tmp_path / "release"
    knob(wb, "z")
    held = cli(wb, "run", "-m", "knob z", env={"SWARM_TEST_HOLD": str(release)})
    while not [r for r in rows(repo) if r["status"] == "running"]:
        assert held.poll() is None
        time.sleep(0.05)
    knob(wa, "x")
    assert run(wa, "knob x").value("verdict") == "keep"
    release.write_text("go")
    out = held.communicate(timeout=120)[0]
    (stale,) = [r for r in rows(repo) if r["agent"] == "b"]
    assert stale["verdict"] == "stale", out
    assert git(wb, "status", "--porcelain") == ""  # nothing committed, the tree restored
    log = Log()
    assert swarm.sync(path=wb, log=log) == 0
    assert log.value("change").startswith(f"experiment {stale['id']} re-applied")
    assert run(wb, "knob z").value("verdict") == "keep"  # judged again, on the new best: it still helps
    assert rows(repo)[-1]["metric_mean"] == pytest.approx(1.85)

    # a changes the file b is changing too, and keeps first: b's change in progress cannot be re-applied
    swarm.sync(path=wa, log=Log())
    (wa / "knobs" / "x").write_text("2")
    (wb / "knobs" / "x").write_text("3")
    assert run(wa, "knob x twice as strong").value("verdict") == "keep"
    best = Context.open(wa).best()
    log = Log()
    assert swarm.sync(path=wb, log=log) == 4
    assert "CONFLICTS" in log.value("change")
    assert git(wb, "rev-parse", "HEAD").strip() == best["commit_sha"] and git(wb, "status", "--porcelain") == ""
    assert "+3" in (wb / "research" / "swarm" / "pending.diff").read_text()


def test_an_agent_on_another_kind_of_machine_measures_the_new_best_there(tag_repo, monkeypatch):
    repo = tag_repo
    wa, wb = join(repo, "a"), join(repo, "b")
    knob(wa, "x")
    assert run(wa, "knob x").value("verdict") == "keep"
    best = Context.open(wa).best()
    led = Context.open(wa).ledger
    led.update("experiments", best["id"], machine=dict(best["machine"], cpu="another cpu"))  # a's machine
    monkeypatch.setenv("SWARM_TEST_MACHINE_OFFSET", "-0.02")  # b's machine reads every run 0.02 lower
    log = Log()
    assert swarm.sync(path=wb, log=log) == 0
    assert log.value("remeasured").startswith("1.880100 over 3 seeds")
    here = [r for r in rows(repo, "baselines") if r["role"] == "remeasure"]
    assert [(r["agent"], r["commit_sha"]) for r in here] == [("b", best["commit_sha"])] * 3
    # a no-op on b's machine reads 1.88: against a's 1.90 it would be a keep; against the best measured here, not
    (wb / "research" / "experiment.toml").write_text((wb / "research" / "experiment.toml").read_text() + "\n")
    assert run(wb, "a no-op").value("verdict") != "keep"
    assert rows(repo)[-1]["best_metric"] == pytest.approx(1.8801)


def test_merge_keeps_the_winners_that_still_help_and_drops_the_one_that_does_not(tag_repo, tmp_path):
    repo = tag_repo
    wa, wb, wc = join(repo, "a", slots=3), join(repo, "b"), join(repo, "c")
    release = tmp_path / "release"
    knob(wb, "z")
    knob(wc, "y")
    held = [cli(w, "run", "-m", m, env={"SWARM_TEST_HOLD": str(release)}) for w, m in ((wb, "knob z"), (wc, "knob y"))]
    while len([r for r in rows(repo) if r["status"] == "running"]) < 2:  # both started from the baseline
        assert all(p.poll() is None for p in held)
        time.sleep(0.05)
    knob(wa, "x")
    assert run(wa, "knob x").value("verdict") == "keep"  # while b's and c's runs are still training
    release.write_text("go")
    outs = [p.communicate(timeout=120)[0] for p in held]
    assert all(p.returncode == 0 for p in held), outs
    by_desc = {r["description"]: r for r in rows(repo)}
    assert by_desc["knob z"]["verdict"] == "stale" and by_desc["knob y"]["verdict"] == "stale", outs
    assert by_desc["knob z"]["commit_sha"] is None and "global best moved" in by_desc["knob z"]["reason"]
    assert Context.open(wa).best()["description"] == "knob x"

    wm = join(repo, "merger")
    log = Log()
    assert swarm.merge(path=wm, log=log) == 0
    merged = [r for r in rows(repo) if r["agent"] == "merger"]
    assert [(r["description"].split(" (")[0], r["verdict"]) for r in merged] == [
        ("merge: knob y", "discard"), ("merge: knob z", "keep")]  # best-first: y (1.94) before z (1.95)
    best = Context.open(wm).best()
    assert best["id"] == merged[-1]["id"] and best["metric_mean"] == pytest.approx(1.85)
    tree = git(wm, "ls-tree", "-r", "--name-only", best["commit_sha"])
    assert "knobs/x" in tree and "knobs/z" in tree and "knobs/y" not in tree
    assert swarm.merge(path=wm, log=Log()) == 0  # nothing left to merge: each candidate is tried once
    assert len([r for r in rows(repo) if r["agent"] == "merger"]) == 2
    remote = Context.open(wm).swarm["remote"]  # the kept code is on the shared remote
    assert git(repo, "ls-remote", remote, "refs/heads/research/t1/merger").split()[0] == best["commit_sha"]
    assert report.plot(path=wm, log=Log()) == 0  # every agent's experiments in its colour
    assert (wm / "research" / "progress.png").stat().st_size > 10_000


def test_claims_are_flagged_when_taken_and_expire_with_their_agent(tag_repo):
    repo = tag_repo
    wa, wb = join(repo, "a"), join(repo, "b")
    log = Log()
    assert swarm.claim("Lower the learning rate of the head", tags=["lr"], path=wa, log=log) == 0
    first = int(log.value("claim"))
    assert log.value("duplicate_of") == "none"
    log = Log()
    swarm.claim("lower the learning-rate of the head!", path=wb, log=log)
    assert log.value("duplicate_of").startswith(f"claim {first} by a (near-identical description)")
    knob(wa, "x")
    run(wa, "knob x")  # tries a's claim: it is done, the experiment now stands for it
    exp = rows(repo)[-1]["id"]
    assert [c["status"] for c in rows(repo, "claims") if c["agent"] == "a"] == ["done"]
    swarm.sync(path=wb, log=Log())
    knob(wb, "x", 2)
    log = Log()
    swarm.claim("an unrelated description", path=wb, log=log)
    assert log.value("duplicate_of").startswith(f"experiment {exp} by a (same files and config keys)")
    git(wb, "checkout", "--", ".")
    git(wb, "clean", "-fdq")

    # an agent process holding a claim is killed: the claim expires, seen by everyone
    script = ("import os, subprocess, sys, time; os.environ['NANOWHALE_AGENT_PID'] = str(os.getpid()); "
              "subprocess.run([sys.executable, '-m', 'nanowhale.cli', 'research', 'claim', 'deeper model'], check=True, "
              "stdout=subprocess.DEVNULL); print('claimed', flush=True); time.sleep(600)")
    agent = subprocess.Popen([sys.executable, "-c", script], cwd=wb, stdout=subprocess.PIPE, text=True)
    assert agent.stdout.readline().strip() == "claimed"
    slog = Log()
    report.status(as_json=True, path=wa, log=slog)
    assert [c["description"] for c in json.loads(slog.lines[0])["claims"]] == ["deeper model"]  # b's latest
    agent.kill()
    agent.wait()
    slog = Log()
    report.status(as_json=True, path=wa, log=slog)
    status = json.loads(slog.lines[0])
    assert status["claims"] == [] and status["agents"]["a"]["keeps"] == 1
    swarm.heartbeat(Context.open(wa))  # the next write records it
    deeper = [c for c in rows(repo, "claims") if c["description"] == "deeper model"][0]
    assert deeper["status"] == "expired" and deeper["agent"] == "b"
    assert [c["status"] for c in rows(repo, "claims") if c["agent"] == "b"] == ["released", "released", "expired"]

    # without a process to watch, a claim lives as long as its lease, renewed by the agent's commands
    swarm.claim("wider experts", lease_seconds=60, path=wb, log=Log())
    c = [c for c in rows(repo, "claims") if c["description"] == "wider experts"][0]
    assert not swarm.lapsed(c, c["heartbeat_at"] + 59) and swarm.lapsed(c, c["heartbeat_at"] + 61)


@pytest.mark.parametrize("a, b, same", [
    ("higher Muon learning rate 0.04 for a run this short", "higher Muon learning rate (0.04) for a run this short", True),
    ("raise the embedding learning rate to 0.1", "higher embedding learning rate 0.1", True),
    ("decay over the last 70% instead of 50%", "decay over the last 70% of training instead of 50%", True),
    ("higher Muon learning rate 0.06", "higher LM head learning rate 0.008", False),   # other numbers: other idea
    ("higher Muon learning rate 0.04", "higher Muon learning rate 0.06", False),
    ("LR warmup over the first 5% of training", "Muon momentum warmup over 20% of training", False),
    ("deeper model", "wider experts", False),
])
def test_near_identical_descriptions(a, b, same):
    assert swarm.similar_descriptions(a, b) is same and swarm.similar_descriptions(b, a) is same


def test_agents_asking_for_one_slot_run_one_after_the_other(tag_repo):
    repo = tag_repo
    wa, wb = join(repo, "a", slots=1), join(repo, "b")
    knob(wa, "x")
    knob(wb, "z")
    env = {"SWARM_TEST_TRAIN_SECONDS": "0.5"}  # long enough that two unqueued runs would overlap
    procs = {w.name[-1]: cli(w, "run", "-m", f"run of {w.name[-1]}", env=env) for w in (wa, wb)}
    outs = {a: p.communicate(timeout=120)[0] for a, p in procs.items()}
    slots = [(e["kind"], e["agent"]) for e in rows(repo, "events") if e["kind"] in ("slot_start", "slot_end")]
    assert len(slots) == 4, outs
    first, second = slots[0][1], slots[2][1]
    assert slots == [("slot_start", first), ("slot_end", first), ("slot_start", second), ("slot_end", second)]
    assert {first, second} == {"a", "b"}
    waits = [e for e in rows(repo, "events") if e["kind"] == "slot_wait"]
    assert [w["agent"] for w in waits] == [second]
    # the first kept while the second waited: the second is not trained (it could only end stale) and its
    # change stays in its tree for sync
    assert procs[first].returncode == 0 and procs[second].returncode != 0
    assert "while this run waited for a slot" in outs[second] and "research sync" in outs[second]
    by_agent = {r["agent"]: r for r in rows(repo)}
    assert by_agent[first]["verdict"] == "keep"
    assert by_agent[second]["status"] == "not_run" and by_agent[second]["verdict"] == "stale"
    assert (wb if second == "b" else wa).joinpath("knobs", "z" if second == "b" else "x").exists()
