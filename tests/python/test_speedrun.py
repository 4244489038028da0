"""`nanowhale speedrun` end to end on the micro model: every stage's run directory and parent, the report,
`nw.load` of the final model; `--dry-run`; a SIGKILL during SFT and the rerun that continues it (bit-identical
final weights); `--from` a research branch made in a throwaway repository."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import nanowhale as nw
from nanowhale.speedrun import make_plan, speedrun
from nanowhale.speedrun.run import STATE_FILE
from research_repo_fixtures import MODEL_CPP, git, make_micro_research_repo
from train_fixtures import micro_run_config, write_corpus

SECTIONS = ("## Plan", "## Lineage", "## Stages", "## Curves", "## Samples", "## Config and its origin")
MC_ITEMS = [{"context": f"{a} plus {b} is", "choices": [str(a + b), str(a + b + 1)], "gold": 0}
            for a, b in ((1, 2), (3, 4), (2, 2), (5, 1), (0, 3), (4, 4))]
# Kills the process right after SFT's 3rd optimizer step: past its checkpoint at step 2, before the one at 4.
KILL_IN_SFT = """
import os, signal, sys
from nanowhale.posttrain.stage import Stage
step = Stage.optimizer_step
def optimizer_step(self, *a, **k):
    out = step(self, *a, **k)
    if self.name == "sft" and self.step == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
Stage.optimizer_step = optimizer_step
from nanowhale.cli import main
sys.exit(main(sys.argv[1:]))
"""


def micro_sets(tmp_path, vocab) -> list[str]:
    """The micro model and budgets of train_fixtures, as speedrun --set flags; a step-counted pretraining so
    that two runs compare bit for bit; one task that exists and one whose file does not."""
    cfg = micro_run_config("", "", vocab)
    tasks = tmp_path / "mc.jsonl"
    tasks.write_text("".join(json.dumps(x) + "\n" for x in MC_ITEMS))
    sets = [f"pretrain.model.{k}={v}" for k, v in cfg["model"].items() if k != "vocab_size"]
    sets += [f"pretrain.optim.{k}.lr={v['lr']}" if isinstance(v, dict) else f"pretrain.optim.{k}={v}"
             for k, v in cfg["optim"].items()]
    sets += ["pretrain.train.time_budget=0", "pretrain.train.steps=8", "pretrain.train.batch_tokens=256",
             "pretrain.train.micro_batch=4", "pretrain.train.threads=2", "pretrain.eval.tokens=1024",
             "pretrain.eval.batch_size=4", "pretrain.eval.every=4", "pretrain.run.checkpoint_every=4",
             "pretrain.sample.max_new_tokens=8",
             "sft.steps=6", "sft.batch_rows=8", "sft.checkpoint_every=2", 'sft.data=["task:arith:5@200"]', "sft.threads=2",
             "rl.steps=3", "rl.prompts=2", "rl.group=4", "rl.max_new_tokens=4", "rl.eval_problems=8",
             "rl.task=arith:5", "rl.threads=2", "rl.checkpoint_every=1",
             f'eval.tasks=["jsonl:{tasks}", "jsonl:{tmp_path / "absent.jsonl"}"]', "eval.limit=4"]
    return sets


def cli(*args, script=None, cwd=None):
    """Runs nanowhale in a child; by default beside the nanowhale this test imported (CI installs it, and the
    source tree has no extension)."""
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "nanowhale.cli", *args]
    cwd = cwd or Path(nw.__file__).resolve().parent.parent
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300)


def weights(run_dir):
    from nanowhale.checkpoint import open_checkpoint

    return (open_checkpoint(run_dir).dir / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, micro_data):
    data, vocab = micro_data
    tmp = tmp_path_factory.mktemp("speedrun")
    return tmp, data, micro_sets(tmp, vocab)


@pytest.fixture(scope="module")
def full(setup):
    """An uninterrupted speedrun, in this process."""
    tmp, data, sets = setup
    plan = make_plan("tiny", data=str(data), run_dir=tmp / "full", sets=sets)
    lines = []
    report = speedrun(plan, log=lambda *a: lines.append(" ".join(map(str, a))))
    return plan, report, lines


def test_every_stage_has_its_run_directory_and_parent(full, setup):
    plan, report, lines = full
    _, data, _ = setup
    run = report.parent
    state = json.loads((run / STATE_FILE).read_text())
    assert list(state["stages"]) == ["data", "pretrain", "sft", "rl", "eval"]  # no preference data: no DPO
    assert all(s["status"] == "done" and s["sessions"] == 1 for s in state["stages"].values())
    pre = nw.load(run / "pretrain")
    assert pre.checkpoint.meta["data_dir"] == str(data) == state["stages"]["pretrain"]["parent"]
    for stage, parent in (("sft", "pretrain"), ("rl", "sft")):
        pt = json.loads((run / stage / "posttrain.json").read_text())
        assert pt["stage"] == stage
        assert pt["parent"]["checkpoint"] == state["stages"][parent]["checkpoint"] == state["stages"][stage]["parent"]
    assert state["stages"]["eval"]["skipped"].keys() == {f"jsonl:{setup[0] / 'absent.jsonl'}"}
    for stage in ("pretrain", "sft", "rl"):
        evals = json.loads((run / stage / "eval_tasks.json").read_text())["checkpoints"]
        (entry,) = evals.values()
        assert entry["tasks"]["jsonl:mc.jsonl"]["n"] == 4 and entry["val_bpb"] > 0
    final = nw.load(run / "rl")
    assert final.checkpoint.meta["posttrain"]["stage"] == "rl" and final.step == 3
    assert len(final.sample(["What is 1+2?"], max_new_tokens=4, temperature=0)) == 1
    assert lines[-1] == f"chat with it: nanowhale chat --ckpt {run / 'rl'}   serve it: nanowhale serve --ckpt {run / 'rl'}"


def test_the_report(full, setup):
    plan, report, _ = full
    text = report.read_text()
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    lineage = text[text.index("## Lineage"):text.index("## Stages")]
    for row in ("| pretrain | base | 8 |", "| sft | sft | 6 |", "| rl | rl | 3 |"):
        assert row in lineage
    assert "| val_bpb | jsonl:mc.jsonl | aggregate |" in lineage
    assert "absent.jsonl" in lineage  # the skipped task is named
    stages = text[text.index("## Stages"):text.index("## Curves")]
    for stage in ("data", "pretrain", "sft", "rl", "eval"):
        assert f"| {stage} | " in stages
    assert "| pretrain | " in stages and "| 2,048 |" in stages  # 8 steps x 256 tokens
    assert "| sft | " in stages and "| 1,536 |" in stages  # 6 steps x 8 rows x 32
    curves = text[text.index("## Curves"):text.index("## Samples")]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "No figures: matplotlib is not installed" in curves
    else:
        for stage in ("pretrain", "sft", "rl"):
            assert f"(figures/{stage}.png)" in curves and (report.parent / "figures" / f"{stage}.png").stat().st_size
    samples = text[text.index("## Samples"):text.index("## Config")]
    assert "before (random initialisation) | after" in samples and samples.count("| What is ") >= 6
    assert "the `tiny` preset's defaults" in text and "pretrain.train.steps=8" in text
    assert text.rstrip().splitlines()[-1].startswith(f"Chat with it: `nanowhale chat --ckpt {report.parent / 'rl'}`")


def test_dry_run_prints_the_plan_and_runs_nothing(setup):
    tmp, data, sets = setup
    run = tmp / "dry"
    r = cli("speedrun", "--dry-run", "--data", str(data), "--run-dir", str(run), "--budget", "20m",
            "--dpo-data", str(tmp / "mc.jsonl"), *[f"--set={s}" for s in sets])
    assert r.returncode == 0, r.stderr
    assert not run.exists()
    out = r.stdout
    assert "budget 20.0 min" in out
    for stage in ("data", "pretrain", "sft", "dpo", "rl", "eval"):
        assert any(line.startswith(stage + " ") for line in out.splitlines()), out
    # the post-training steps scale with the budget: dpo's 10 at the default 10m are 20 at 20m
    assert "20 steps, lr_scale 0.1" in out
    bad = cli("speedrun", "--dry-run", "--budget", "ten minutes")
    assert bad.returncode == 2 and "--budget 'ten minutes'" in bad.stderr


def test_killed_during_sft_continues_to_the_same_weights(full, setup):
    tmp, data, sets = setup
    run = tmp / "killed"
    args = ["speedrun", "--data", str(data), "--run-dir", str(run), "--no-figures", *[f"--set={s}" for s in sets]]
    r = cli(*args, script=KILL_IN_SFT)
    assert r.returncode == -signal.SIGKILL, r.stderr
    state = json.loads((run / STATE_FILE).read_text())
    assert state["stages"]["pretrain"]["status"] == "done" and state["stages"]["sft"]["status"] == "running"
    assert (run / "sft" / "checkpoints" / "latest").read_text().strip() == "step_000002"
    pretrain_files = {p: p.stat().st_mtime_ns for p in (run / "pretrain").rglob("*") if p.is_file()}

    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "pretrain: done in an earlier session" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in pretrain_files} == pretrain_files  # not redone, not touched
    assert "sft: resuming" in r.stdout
    events = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "resume"] == [2]
    assert [e["step"] for e in events if "event" not in e] == [1, 2, 3, 4, 5, 6]  # each step once
    state = json.loads((run / STATE_FILE).read_text())
    assert state["stages"]["sft"]["sessions"] == 2 and state["stages"]["rl"]["sessions"] == 1
    full_run = full[1].parent
    for stage in ("pretrain", "sft", "rl"):
        assert weights(run / stage) == weights(full_run / stage), stage
    assert "No figures: drawing them was turned off" in (run / "report.md").read_text()

    lines = []  # everything done: nothing is redone, the report is rewritten
    speedrun(make_plan("tiny", data=str(data), run_dir=run, sets=sets), log=lines.append, figures=False)
    assert sum("done in an earlier session" in x for x in lines) == 5
    other = [s for s in sets if s != "sft.steps=6"] + ["sft.steps=7"]
    with pytest.raises(ValueError, match="another plan .*sft"):
        speedrun(make_plan("tiny", data=str(data), run_dir=run, sets=other), log=lines.append)


def test_documents_given_as_data_are_prepared_in_the_run(tmp_path, setup, micro_data):
    _, _, sets = setup
    corpus = write_corpus(tmp_path / "corpus", n_docs=60)
    sets = [s for s in sets if not s.startswith(("sft.", "rl.", "eval."))] + [
        f"pretrain.model.vocab_size={micro_data[1]}", "pretrain.data.tokenizer_train_mb=1", "sft.steps=1",
        'sft.data=["task:copy:3@50"]', "rl.steps=1", "rl.prompts=1", "rl.group=2", "rl.max_new_tokens=2",
        "rl.eval_problems=1", "eval.tasks=[]"]
    plan = make_plan("tiny", data=str(corpus), run_dir=tmp_path / "run", sets=sets)
    assert f"{corpus} -> {tmp_path / 'run' / 'data'}" in plan.describe()
    speedrun(plan, log=lambda *a: None, figures=False)
    data = tmp_path / "run" / "data"
    assert (data / "tokenizer.nwtok").exists() and json.loads((data / "prepare_state.json").read_text())["done"]
    assert nw.load(tmp_path / "run" / "pretrain").checkpoint.meta["data_dir"] == str(data)
    assert nw.load(tmp_path / "run" / "rl").tokenizer.vocab_size == micro_data[1]


GOOD_LR = "[optim]\nmuon_lr = 0.05\n[optim.embed]\nlr = 0.1\n[optim.head]\nlr = 0.02\n"
BAD_LR = "[optim]\nmuon_lr = 1e-5\n[optim.embed]\nlr = 1e-5\n[optim.head]\nlr = 1e-5\n"


def keep(repo, description: str) -> str:
    """Commits the working tree on the research branch and records it in the ledger as a kept experiment, as
    `nanowhale research run` does after a keep verdict (the verdict itself is the research tests' business)."""
    from nanowhale.research.context import Context

    ctx = Context.open(repo)
    base = ctx.best_commit()
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", description)
    sha = git(repo, "rev-parse", "HEAD").strip()
    ctx.ledger.insert("experiments", {
        "agent": "agent0", "tag": ctx.tag, "started_at": 1.0, "finished_at": 2.0, "base_commit": base,
        "description": description, "scale": ctx.s["scale"], "budget": ctx.s["budget"], "seeds": [0],
        "metric_name": "val_bpb", "direction": "lower", "metric_values": [2.0], "metric_mean": 2.0,
        "status": "done", "verdict": "keep", "commit_sha": sha})
    return sha


def test_from_a_research_branch(tmp_path, setup):
    from nanowhale.research import commands

    repo, data = make_micro_research_repo(tmp_path)
    (repo / "research").mkdir()
    (repo / "research" / "experiment.toml").write_text(BAD_LR)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a bad learning rate")
    quiet = lambda *a: None  # noqa: E731
    assert commands.init("sr", scale="micro", data=str(data), ladder=str(repo / "ladder.toml"), threads=1,
                         path=repo, log=quiet) == 0
    (repo / "research" / "experiment.toml").write_text(GOOD_LR)
    best = keep(repo, "sensible learning rates")
    git(repo, "checkout", "-q", "main")  # the speedrun reads the branch, wherever the checkout is

    _, _, sets = setup
    sets = [s for s in sets if not s.startswith("pretrain.optim.")]  # the branch decides the learning rates
    plan = make_plan("tiny", data=str(data), run_dir=tmp_path / "run", sets=sets, source="research/sr", repo=repo)
    assert plan.pretrain["optim"]["muon_lr"] == 0.05 and plan.pretrain["optim"]["head"]["lr"] == 0.02
    report = speedrun(plan, log=quiet, figures=False)
    cfg = json.loads((tmp_path / "run" / "pretrain" / "config.json").read_text())
    assert cfg["optim"]["muon_lr"] == 0.05 and cfg["optim"]["embed"]["lr"] == 0.1
    text = report.read_text()
    assert "research/sr" in text and best in text and "sensible learning rates" in text
    assert "muon_lr = 0.05" in text[text.index("## Config and its origin"):]

    with pytest.raises(ValueError, match="research tag 'nope'"):
        make_plan("tiny", data=str(data), sets=sets, source="research/nope", repo=repo)
    with pytest.raises(ValueError, match="expected research/TAG"):
        make_plan("tiny", data=str(data), sets=sets, source="main", repo=repo)

    # a kept change to the code: this process's nanowhale is not that code, so the speedrun refuses
    git(repo, "checkout", "-q", "research/sr")
    (repo / "csrc" / "model" / "model.cpp").write_text(MODEL_CPP.replace("2 * x", "3 * x"))
    keep(repo, "a faster probe")
    with pytest.raises(ValueError, match=r"changed code \(csrc/model/model.cpp\).*git checkout"):
        make_plan("tiny", data=str(data), sets=sets, source="research/sr", repo=repo)
