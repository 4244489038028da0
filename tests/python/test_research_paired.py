"""Paired speed research end to end (`research init --metric paired_tokens_per_second`), in a throwaway repo
(research_repo_fixtures.py) whose built extension is committed, so the best commit's checkout
(research/best) imports a module of its own. Each probe process imports its own tree's nanowhale; the
speed of a tree is set by a sleep its nanowhale/config.py wraps around Model.forward_backward (8 calls per
micro-rung step), decisive against the few milliseconds a micro step computes, however busy the machine."""

import pytest

from nanowhale.research import commands, paired
from nanowhale.research.ledger import load_rows
from research_repo_fixtures import git, make_micro_research_repo
from test_research_loop import Log

PACE = ("\n_C.Model.forward_backward = (lambda fb: lambda self, *a, **k: (__import__('time').sleep({s}), "
        "fb(self, *a, **k))[1])(_C.Model.forward_backward)  # test pacing\n")
PACED, SLOW = PACE.format(s=0.01), PACE.format(s=0.06)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r, data = make_micro_research_repo(tmp_path_factory.mktemp("paired"))
    config = r / "nanowhale" / "config.py"
    config.write_text(config.read_text() + PACED)
    git(r, "add", "-A")
    git(r, "add", "-f", "nanowhale")  # the extension too: the best checkout runs the commit's own module
    git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "paced steps, the module")
    # floor 25%: a relative speed change smaller than that is noise for a test on a shared machine
    assert commands.init("p1", scale="micro", data=str(data), ladder=str(r / "ladder.toml"), threads=1,
                         metric=paired.METRIC, direction="higher", throughput_floor=0.25, pairs=3, probe_steps=5,
                         path=r, log=Log()) == 0
    return r


def run(repo, message):
    log = Log()
    assert commands.run(message, path=repo, log=log) == 0, log.lines
    return log, load_rows(repo / "research" / "ledger.sqlite")["experiments"][-1]


def head(tree):
    return git(tree, "rev-parse", "HEAD").strip()


def test_init_and_baseline_in_paired_mode(repo):
    with pytest.raises(ValueError, match="--direction higher"):
        commands.init("p2", metric=paired.METRIC, path=repo, log=Log())
    with pytest.raises(ValueError, match="needs no baseline"):
        commands.baseline(path=repo, log=Log())


def test_an_unchanged_tree_is_not_judged_faster(repo):
    log, row = run(repo, "a rerun of the best")
    assert row["verdict"] == "inconclusive", log.lines
    assert len(row["metric_values"]) == len(row["best_values"]) == 3 and 0.75 < row["paired_ratio"] < 1.33
    assert head(repo / paired.BEST_CHECKOUT) == head(repo)
    assert git(repo, "status", "--porcelain") == ""  # the checkout is ignored, the tree restored


def test_a_slower_step_is_judged_slower(repo):
    config = repo / "nanowhale" / "config.py"
    config.write_text(config.read_text().replace(PACED, SLOW))
    log, row = run(repo, "sleep longer in every forward_backward")
    assert row["verdict"] == "discard" and "slower than the best" in row["reason"], log.lines
    assert all(c < b for b, c in zip(row["best_values"], row["metric_values"])) and row["paired_ratio"] < 0.5
    assert row["margin"] >= 2 * 0.25 / 3 ** 0.5 and log.value("ratio") == f"{row['paired_ratio']:.4f}"
    assert PACED in config.read_text() and row["commit_sha"] is None


def test_a_faster_step_is_kept_and_the_best_checkout_follows(repo):
    start = head(repo)
    config = repo / "nanowhale" / "config.py"
    config.write_text(config.read_text().replace(PACED, ""))
    log, row = run(repo, "no pacing sleep")
    assert row["verdict"] == "keep" and row["paired_ratio"] > 1.5, log.lines
    assert head(repo) == row["commit_sha"] != start
    # the next run moves research/best to the new best commit, whose config has no pacing
    log, row = run(repo, "a rerun of the new best")
    best = repo / paired.BEST_CHECKOUT
    assert head(best) == head(repo) and PACED not in (best / "nanowhale" / "config.py").read_text()
    assert "moved to" in "\n".join(log.lines) and row["verdict"] != "discard", log.lines
