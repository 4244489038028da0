"""`nanowhale research` end to end, in a temporary git repo made here (research_fixtures.py), on micro
shapes with a budget of a few thousand tokens. The baseline's learning rates are deliberately far too low,
so a known-good change exists; every verdict path of the harness is driven by a scripted "agent"."""

import re

import pytest

from nanowhale.research import build, commands, report
from nanowhale.research.context import EXPERIMENT_CONFIG, Context
from nanowhale.research.ledger import load_rows
from research_repo_fixtures import MODEL_CPP, git, make_micro_research_repo

STEP_END = "            dt = time.perf_counter() - t0\n"
PACED = "            time.sleep(0.03)\n"
SLOW = "            time.sleep(1.0)\n"
BAD_LR = "[optim]\nmuon_lr = 1e-5\n[optim.embed]\nlr = 1e-5\n[optim.head]\nlr = 1e-5\n"
GOOD_LR = "[optim]\nmuon_lr = 0.05\n[optim.embed]\nlr = 0.1\n[optim.head]\nlr = 0.02\n"


class Log:
    def __init__(self):
        self.lines = []

    def __call__(self, *parts):
        self.lines.append(" ".join(str(p) for p in parts))

    def value(self, key):
        for line in reversed("\n".join(self.lines).splitlines()):
            if line.startswith(key + ": "):
                return line[len(key) + 2:]
        raise KeyError(key)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r, data = make_micro_research_repo(tmp_path_factory.mktemp("research"))
    (r / "research").mkdir()
    (r / EXPERIMENT_CONFIG).write_text(BAD_LR)
    # Steps paced by a fixed sleep: a micro step's compute lasts milliseconds and swings several-fold between
    # runs when the machine is busy (CI shares it with the build); the pace keeps the baseline's throughput
    # noise small enough for time control to see the slow step injected below.
    edit(r / "nanowhale" / "trainer.py", STEP_END, PACED + STEP_END)
    git(r, "add", "-A")
    git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a bad learning rate")
    log = Log()
    # throughput floor 25%: even paced, a busy machine swings a micro run's speed that much
    assert commands.init("t1", scale="micro", data=str(data), ladder=str(r / "ladder.toml"), threads=1,
                         throughput_floor=0.25, path=r, log=log) == 0
    assert git(r, "rev-parse", "--abbrev-ref", "HEAD").strip() == "research/t1"
    assert commands.baseline(repeats=3, path=r, log=log) == 0
    return r, data


def run(repo, message, seeds=1):
    log = Log()
    rc = commands.run(message, seeds=seeds, path=repo, log=log)
    return rc, log


def last_row(repo):
    return load_rows(repo / "research" / "ledger.sqlite")["experiments"][-1]


def edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_init_refuses_a_dirty_tree_and_an_existing_tag(repo):
    r, data = repo
    with pytest.raises(ValueError, match="branch research/t1 already exists"):
        commands.init("t1", scale="micro", data=str(data), ladder=str(r / "ladder.toml"), path=r, log=Log())
    (r / "stray.txt").write_text("x")
    try:
        with pytest.raises(ValueError, match="working tree has changes.*stray.txt"):
            commands.init("t2", scale="micro", data=str(data), ladder=str(r / "ladder.toml"), path=r, log=Log())
    finally:
        (r / "stray.txt").unlink()


def test_the_verdicts_of_the_loop(repo):
    r, _ = repo
    ctx = Context.open(r)
    noise = ctx.noise()
    assert noise["r"] == 3 and noise["sigma"] > 0
    start = git(r, "rev-parse", "HEAD").strip()

    # a known-good change: sensible learning rates -> kept and committed
    (r / EXPERIMENT_CONFIG).write_text(GOOD_LR)
    rc, log = run(r, "sensible learning rates")
    assert rc == 0 and log.value("verdict") == "keep", log.lines
    row = last_row(r)
    assert row["verdict"] == "keep" and row["metric_mean"] < noise["mean"] - 0.1
    head = git(r, "rev-parse", "HEAD").strip()
    assert head != start and row["commit_sha"] == head
    assert "sensible learning rates" in git(r, "log", "-1", "--format=%B")
    assert "muon_lr = 0.05" in row["config_diff"]

    # a known-bad change: back to the bad rates -> discarded, its diff kept, the tree restored
    (r / EXPERIMENT_CONFIG).write_text(BAD_LR)
    rc, log = run(r, "tiny learning rates again")
    assert log.value("verdict") == "discard", log.lines
    row = last_row(r)
    assert "muon_lr = 1e-5" in row["config_diff"] and row["commit_sha"] is None
    assert (r / EXPERIMENT_CONFIG).read_text() == GOOD_LR and git(r, "status", "--porcelain") == ""
    assert git(r, "rev-parse", "HEAD").strip() == head

    # a change inside the noise (a key without effect on a step-budgeted run) -> not kept
    edit(r / EXPERIMENT_CONFIG, "[optim]\n", "[train]\nclock_skip_steps = 5\n[optim]\n")
    rc, log = run(r, "no-op: clock skip steps", seeds=2)
    assert log.value("verdict") in ("inconclusive", "discard"), log.lines
    assert last_row(r)["metric_values"][0] == pytest.approx(ctx.best()["metric_values"][0], abs=0)

    # a slower step at equal loss -> discarded by time control
    edit(r / "nanowhale" / "trainer.py", PACED, SLOW)
    rc, log = run(r, "sleep in every step")
    assert log.value("verdict") == "discard" and "time control" in log.value("reason"), log.lines
    assert "time.sleep(1.0)" in last_row(r)["code_diff"]
    assert SLOW not in (r / "nanowhale" / "trainer.py").read_text()
    assert PACED in (r / "nanowhale" / "trainer.py").read_text()

    # an edit to the evaluation -> refused, naming the file; nothing trained
    n = len(load_rows(r / "research" / "ledger.sqlite")["experiments"])
    ev = r / "nanowhale" / "evaluate.py"
    ev.write_text(ev.read_text() + "\nSCALE = 0.5  # a 'better' metric\n")
    rc, log = run(r, "halve the metric")
    assert rc == 3 and log.value("verdict") == "refused" and "nanowhale/evaluate.py (modified)" in log.value("reason")
    assert len(load_rows(r / "research" / "ledger.sqlite")["experiments"]) == n
    git(r, "checkout", "--", "nanowhale/evaluate.py")

    # a Python exception -> a crash row with the log's tail, tree restored
    edit(r / "nanowhale" / "trainer.py", "    t_start = time.perf_counter()\n",
         "    t_start = time.perf_counter()\n    raise RuntimeError('injected failure')\n")
    rc, log = run(r, "python crash")
    row = last_row(r)
    assert row["verdict"] == "crash" and "injected failure" in row["log_tail"]
    assert git(r, "status", "--porcelain") == ""

    # a C++ compile error -> a crash row (build_failed), tree restored
    (r / "csrc" / "model" / "model.cpp").write_text(MODEL_CPP + "int broken( {\n")
    rc, log = run(r, "c++ syntax error")
    row = last_row(r)
    assert row["verdict"] == "crash" and row["status"] == "build_failed" and "model.cpp" in row["log_tail"]
    assert (r / "csrc" / "model" / "model.cpp").read_text() == MODEL_CPP

    # status sees all of it; the TSV has autoresearch's columns
    slog = Log()
    report.status(path=r, log=slog)
    assert slog.value("experiments") == "6" and slog.value("keeps") == "1" and slog.value("crashes") == "2"
    assert slog.value("lineage") == f"baseline -> #{ctx.best()['id']}"
    tlog = Log()
    report.status(tsv=True, path=r, log=tlog)
    assert tlog.lines[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription" and len(tlog.lines) == 7
    show = Log()
    report.show(2, diff_only=True, path=r, log=show)
    assert "muon_lr = 1e-5" in show.lines[0]
    plog = Log()
    assert report.plot(path=r, log=plog) == 0
    assert (r / "research" / "progress.png").stat().st_size > 10_000 and "progress.png" in plog.value("figures")


def test_rebuild_only_when_a_cpp_file_changed(repo):
    r, _ = repo
    setup = build.detect(r)
    assert setup.kind == "cmake"
    build.rebuild(setup)
    assert build.rebuild(setup).rebuilt is False        # an untouched tree: nothing compiled
    (r / "csrc" / "model" / "model.cpp").write_text(MODEL_CPP.replace("2 * x", "3 * x"))
    try:
        res = build.rebuild(setup)
        assert res.ok and res.rebuilt and "model.cpp" in res.log
        assert build.rebuild(setup).rebuilt is False
    finally:
        git(r, "checkout", "--", "csrc/model/model.cpp")
        build.rebuild(setup)


def test_promote_on_a_two_rung_ladder(repo):
    r, _ = repo
    log = Log()
    assert commands.promote(repeats=2, path=r, log=log) == 0, log.lines
    assert log.value("to_scale") == "micro2"
    assert log.value("verdict") == "transferred" and log.value("heldout_verdict") == "transferred", log.lines
    (p,) = load_rows(r / "research" / "ledger.sqlite")["promotions"]
    assert p["best_mean"] < p["start_mean"] - p["margin"]
    assert git(r, "rev-parse", "--abbrev-ref", "HEAD").strip() == "research/t1"
    runs = [b for b in load_rows(r / "research" / "ledger.sqlite")["baselines"] if b["promotion_id"] == p["id"]]
    assert len(runs) == 4 and all(b["heldout_metric"] is not None for b in runs)
