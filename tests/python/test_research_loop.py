"""`nanowhale research` end to end, in a temporary git repo made here (research_fixtures.py), on micro
shapes with a budget of a few thousand tokens. The baseline's learning rates are deliberately far too low,
so a known-good change exists; every verdict path of the harness is driven by a scripted "agent"."""

import subprocess
import sys

import pytest

from nanowhale.config import tomllib
from nanowhale.research import build, carry, commands, report
from nanowhale.research.context import EXPERIMENT_CONFIG, Context
from nanowhale.research.ledger import load_rows
from research_repo_fixtures import MODEL_CPP, git, make_micro_research_repo

# Steps paced by a sleep in every forward_backward (8 per micro step; nanowhale/config.py wraps the
# method, so the trainer and the time-control probe both see it): a micro step's compute lasts
# milliseconds and swings several-fold when the machine is busy, the pace dominates it. SLOW doubles it.
PACE = ("\n_C.Model.forward_backward = (lambda fb: lambda self, *a, **k: (__import__('time').sleep({s}), "
        "fb(self, *a, **k))[1])(_C.Model.forward_backward)  # test pacing\n")
PACED, SLOW = PACE.format(s=0.01), PACE.format(s=0.02)
BAD_LR = "[optim]\nmuon_lr = 1e-5\n[optim.embed]\nlr = 1e-5\n[optim.head]\nlr = 1e-5\n"
GOOD_LR = "[optim]\nmuon_lr = 0.05\n[optim.embed]\nlr = 0.1\n[optim.head]\nlr = 0.02\n"
# n_layer 2 -> 3 paid for by narrower feed-forwards: +4.5% active parameters, +7.7% FLOPs/token
DEPTH_FOR_WIDTH = "[model]\nn_layer = 3\ndense_hidden = 32\nexpert_hidden = 16\nshared_hidden = 16\n"
WIDER = "[model]\nd_model = 48\n"  # +50% active parameters


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
    config = r / "nanowhale" / "config.py"
    config.write_text(config.read_text() + PACED)
    git(r, "add", "-A")
    git(r, "add", "-f", "nanowhale")  # the extension too: time control's best checkout runs the commit's module
    git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a bad learning rate, paced steps")
    log = Log()
    # throughput floor 25%: a relative speed change smaller than that is noise for a test on a shared machine
    assert commands.init("t1", scale="micro", data=str(data), ladder=str(r / "ladder.toml"), threads=1,
                         throughput_floor=0.25, pairs=3, probe_steps=5, path=r, log=log) == 0
    assert git(r, "rev-parse", "--abbrev-ref", "HEAD").strip() == "research/t1"
    assert commands.baseline(repeats=3, path=r, log=log) == 0
    return r, data


class BusyLoops:
    """Two processes spinning on the test's 2-core budget: the load a shared machine puts on a run."""

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


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


def test_init_writes_the_map(repo):
    r, _ = repo
    text = (r / "research" / "map.md").read_text()
    assert "training tokens" in text and "tokens per active parameter" in text and "minutes per run" in text
    assert "| `model.d_model` | 32 | [1, 65536], a multiple of n_head |" in text  # the current value, its range
    assert "| `optim.muon_lr` | 1e-05 | >= 0 |" in text  # the start's experiment config applied
    assert "- `nanowhale/trainer.py`: " in text and "- `csrc/model/model.cpp`: " in text
    assert "train.steps" not in text and git(r, "status", "--porcelain") == ""  # harness keys out; the map ignored


def test_init_refuses_a_dirty_tree_and_an_existing_tag(repo):
    r, data = repo
    with pytest.raises(ValueError, match="branch research/t1 already exists"):
        commands.init("t1", scale="micro", data=str(data), ladder=str(r / "ladder.toml"), path=r, log=Log())
    (r / "stray.txt").write_text("x")
    try:
        with pytest.raises(ValueError, match=r"working tree has changes: stray.txt \(untracked\)"):
            commands.init("t2", scale="micro", data=str(data), ladder=str(r / "ladder.toml"), path=r, log=Log())
    finally:
        (r / "stray.txt").unlink()


def test_the_verdicts_of_the_loop(repo):
    r, _ = repo
    ctx = Context.open(r)
    noise = ctx.noise()
    assert noise["r"] == 3 and noise["sigma"] > 0
    start = git(r, "rev-parse", "HEAD").strip()

    # a known-good change that also doubles the step's cost -> the metric would keep it, the paired probe
    # (the best checkout's step beside the candidate's) finds it slower: discarded by time control
    config = r / "nanowhale" / "config.py"
    (r / EXPERIMENT_CONFIG).write_text(GOOD_LR)
    edit(config, PACED, SLOW)
    rc, log = run(r, "sensible learning rates, and sleep twice as long in every step")
    row = last_row(r)
    assert log.value("verdict") == "discard" and "time control" in log.value("reason"), log.lines
    assert row["time_verdict"] == "slower" and row["time_ratio"] < 0.75
    assert len(row["time_best_values"]) == len(row["time_candidate_values"]) == 3
    assert row["metric_mean"] < noise["mean"] - 0.1 and len(row["metric_values"]) == 1  # not confirmed: discarded first
    assert PACED in config.read_text() and (r / EXPERIMENT_CONFIG).read_text() == BAD_LR

    # the same learning rates alone (a change that cannot cost time), timed while two busy loops load the
    # machine -> not slower; kept, and confirmed over as many seeds as the baseline before it becomes the best
    (r / EXPERIMENT_CONFIG).write_text(GOOD_LR)
    with BusyLoops():
        rc, log = run(r, "sensible learning rates")
    assert rc == 0 and log.value("verdict") == "keep", log.lines
    row = last_row(r)
    assert row["time_verdict"] in ("inconclusive", "faster") and len(row["time_best_values"]) == 3
    assert row["seeds"] == [0, 1, 2] and len(row["metric_values"]) == 3
    assert row["verdict"] == "keep" and row["metric_mean"] < noise["mean"] - 0.1
    assert ctx.reference()[0].r == 3
    head = git(r, "rev-parse", "HEAD").strip()
    assert head != start and row["commit_sha"] == head
    message = git(r, "log", "-1", "--format=%B")
    assert message.startswith("sensible learning rates\n\nval_bpb: ") and "over 3 seeds" in message
    assert "time control: inconclusive" in message or "time control: faster" in message
    assert "muon_lr = 0.05" in row["config_diff"]
    assert commands.change_description(ctx, row) == "sensible learning rates"  # a rerun of this diff says so

    # a known-bad change: back to the bad rates -> discarded, its diff kept, the tree restored
    (r / EXPERIMENT_CONFIG).write_text(BAD_LR)
    rc, log = run(r, "tiny learning rates again")
    assert log.value("verdict") == "discard", log.lines
    row = last_row(r)
    assert "muon_lr = 1e-5" in row["config_diff"] and row["commit_sha"] is None and row["time_verdict"] is None
    assert (r / EXPERIMENT_CONFIG).read_text() == GOOD_LR and git(r, "status", "--porcelain") == ""
    assert git(r, "rev-parse", "HEAD").strip() == head

    # a change inside the noise (a key without effect on a step-budgeted run) -> not kept
    edit(r / EXPERIMENT_CONFIG, "[optim]\n", "[train]\nclock_skip_steps = 5\n[optim]\n")
    rc, log = run(r, "no-op: clock skip steps", seeds=2)
    assert log.value("verdict") in ("inconclusive", "discard"), log.lines
    assert last_row(r)["metric_values"][0] == pytest.approx(ctx.best()["metric_values"][0], abs=0)

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
    assert slog.value("best_seeds") == "3" and len(slog.value("best_values").split()) == 3
    tlog = Log()
    report.status(tsv=True, path=r, log=tlog)
    assert tlog.lines[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription" and len(tlog.lines) == 7
    show = Log()
    report.show(3, diff_only=True, path=r, log=show)
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


def test_the_size_class_is_locked(repo):
    r, data = repo
    n = len(load_rows(r / "research" / "ledger.sqlite")["experiments"])
    (r / EXPERIMENT_CONFIG).write_text(GOOD_LR + WIDER)
    rc, log = run(r, "wider")
    reason = log.value("reason")
    assert rc == 3 and log.value("verdict") == "refused", log.lines
    assert "active parameters" in reason and "(+50.0%)" in reason and "model.d_model 32 -> 48" in reason
    assert len(load_rows(r / "research" / "ledger.sqlite")["experiments"]) == n  # nothing trained
    (r / EXPERIMENT_CONFIG).write_text(GOOD_LR + DEPTH_FOR_WIDTH)
    assert commands.size_check(Context.open(r))[0] is None  # depth for width at equal FLOPs (±10%)
    (r / EXPERIMENT_CONFIG).write_text(GOOD_LR + "[model]\nn_kv_head = 3\n")
    rc, log = run(r, "a config that does not validate")
    assert rc == 3 and "n_kv_head" in log.value("reason"), log.lines
    git(r, "checkout", "--", EXPERIMENT_CONFIG)

    # --free-size: the lock lifted, the experiment marked, the tag's keeps not promoted
    assert commands.init("free", scale="micro", data=str(data), ladder=str(r / "ladder.toml"), threads=1,
                         free_size=True, throughput_floor=0.25, pairs=3, probe_steps=5, path=r, log=Log()) == 0
    try:
        assert commands.baseline(repeats=2, path=r, log=Log()) == 0  # the free tag's own noise floor
        (r / EXPERIMENT_CONFIG).write_text(BAD_LR + WIDER)
        assert commands.size_check(Context.open(r))[0] is None
        rc, log = run(r, "wider")
        row = last_row(r)
        assert rc == 0 and row["free_size"] == 1 and row["active_params"] > 40000, log.lines
        with pytest.raises(ValueError, match="free-size"):
            commands.promote(path=r, log=Log())
    finally:
        git(r, "checkout", "-q", "--force", "research/t1")


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


def test_a_change_is_carried_to_the_next_rung(repo):
    r, _ = repo
    ctx = Context.open(r)
    micro, micro2 = ctx.rung("micro"), ctx.rung("micro2")
    exp = tomllib.loads(GOOD_LR + DEPTH_FOR_WIDTH)
    diff = carry.change(ctx.resolve({}, micro), ctx.resolve(exp, micro))
    assert diff["model.n_layer"] == (2, 3) and diff["optim.muon_lr"][1] == 0.05 and "train.steps" not in diff
    values, notes = carry.carry(diff, ctx.resolve({}, micro2))
    # micro2 is 3 layers of 48 wide: x1.5 layers (4.5 rounds up), feed-forwards halved; learning rates as values
    assert values["model.n_layer"] == 5 and values["model.dense_hidden"] == 48 and values["model.expert_hidden"] == 24
    assert values["optim.muon_lr"] == 0.05 and values["optim.head.lr"] == 0.02
    assert "optim.embed.lr" not in values  # 0.1 is the rung's own value: no change to carry
    assert "model.n_layer 2 -> 3 (x1.5): 3 -> 5" in notes
    cfg = ctx.resolve(carry.nested(values), micro2)  # validates at the target
    assert cfg.model["n_layer"] == 5 and cfg.model["d_model"] == 48
    # shapes round to valid values: micro2's 3 heads x2 = 6; its d_model 48 x1.0625 = 51, a multiple of 6: 54
    values, _ = carry.carry({"model.n_head": (2, 4), "model.d_model": (32, 34)}, ctx.resolve({}, micro2))
    assert values == {"model.n_head": 6, "model.d_model": 54}


def test_an_uncarriable_best_fails_before_training(repo):
    r, data = repo
    assert commands.init("carry", scale="micro", data=str(data), ladder=str(r / "ladder.toml"), threads=1,
                         path=r, log=Log()) == 0
    try:
        (r / EXPERIMENT_CONFIG).write_text(GOOD_LR + "[train]\nmicro_batch = 16\n")
        git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "micro_batch 16")
        ctx = Context.open(r)
        sha = git(r, "rev-parse", "HEAD").strip()
        # the best as a keep would record it (the verdict path itself is test_the_verdicts_of_the_loop's)
        ctx.ledger.insert("experiments", {"agent": "t", "tag": "carry", "started_at": 0.0, "base_commit": sha,
                                          "commit_sha": sha, "description": "micro_batch 16", "scale": "micro",
                                          "budget": ctx.s["budget"], "seeds": [0], "metric_name": "val_bpb",
                                          "direction": "lower", "metric_values": [1.0], "metric_mean": 1.0,
                                          "status": "done", "verdict": "keep"})
        assert carry.best_config(ctx, "micro2").train.micro_batch == 16  # fits micro2's 2048-token batch
        before = load_rows(r / "research" / "ledger.sqlite")
        with pytest.raises(ValueError, match=r"cannot carry .* to micro-long: train.batch_tokens: must be a positive "
                           r"multiple of train.micro_batch \* model.seq_len = 1536.*train.micro_batch 8 -> 16"):
            commands.promote(to="micro-long", path=r, log=Log())
        after = load_rows(r / "research" / "ledger.sqlite")
        assert len(after["promotions"]) == len(before["promotions"]) and len(after["baselines"]) == len(before["baselines"])
    finally:
        git(r, "checkout", "-q", "--force", "research/t1")
