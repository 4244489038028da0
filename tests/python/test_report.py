"""`nanowhale report`: a markdown table across a fixture lineage base -> sft -> rl."""

import json
import shutil

import pytest

from nanowhale.checkpoint import open_checkpoint
from nanowhale.cli import main
from nanowhale.report import lineage


def task_result(acc, se, primary="acc", chance=0.25):
    return {"kind": "multiple_choice", "n": 10, "shots": 0, "acc": acc, "acc_stderr": se, "acc_norm": acc / 2,
            "acc_norm_stderr": se, "chance": chance, "primary": primary}


def write_evals(run, step, tasks):
    (run / "eval_tasks.json").write_text(json.dumps({"checkpoints": {str(step): {"step": step, "tasks": tasks}}}))


@pytest.fixture
def lineage_dirs(micro_run, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(micro_run, base)
    (base / "eval_tasks.json").unlink(missing_ok=True)
    runs = [base]
    for stage in ("sft", "rl"):
        d = tmp_path / stage
        shutil.copytree(micro_run, d)
        (d / "eval_tasks.json").unlink(missing_ok=True)
        parent = open_checkpoint(runs[-1]).dir
        (d / "posttrain.json").write_text(json.dumps({"stage": stage, "parent": {"checkpoint": str(parent)}}))
        runs.append(d)
    step = open_checkpoint(base).meta["step"]
    write_evals(base, step, {"piqa": task_result(0.6, 0.02, "acc", 0.5), "mmlu": task_result(0.25, 0.01)})
    write_evals(runs[1], step, {"mmlu": task_result(0.4, 0.02)})
    data = json.loads((runs[1] / "eval_tasks.json").read_text())
    data["checkpoints"][str(step)]["val_bpb"] = 3.25  # measured by eval --task
    (runs[1] / "eval_tasks.json").write_text(json.dumps(data))
    with open(runs[2] / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"event": "eval", "step": 1, "val_reward": 0.1}) + "\n")
        f.write(json.dumps({"event": "eval", "step": 2, "val_reward": 0.375}) + "\n")
    return runs


def test_report_follows_the_lineage(lineage_dirs, capsys):
    base, sft, rl = lineage_dirs
    assert [p.name for p in lineage(rl)] == ["base", "sft", "rl"]
    assert main(["report", str(rl)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| run | stage | step | val_bpb | mmlu | piqa | aggregate | reward |"  # the usual task order
    assert lines[1] == "|---|---|---|---:|---:|---:|---:|---:|"
    base_row, sft_row, rl_row = (line.split(" | ") for line in lines[2:5])
    val_bpb = open_checkpoint(base).meta["val_bpb"]
    assert base_row[:4] == ["| base", "base", str(open_checkpoint(base).meta["step"]), f"{val_bpb:.4f}"]
    # aggregate: mmlu (0.25 - 0.25) / 0.75 = 0 and piqa (0.6 - 0.5) / 0.5 = 0.2 -> 0.1
    assert base_row[4:] == ["0.250 ± 0.010", "0.600 ± 0.020", "0.1000", "— |"]
    assert sft_row[1] == "sft" and sft_row[3:] == ["3.2500", "0.400 ± 0.020", "—", "0.2000", "— |"]
    assert rl_row[1] == "rl" and rl_row[4:] == ["—", "—", "—", "0.375 |"]


def test_report_rows_in_the_order_given_and_bad_input(lineage_dirs, tmp_path, capsys):
    base, sft, rl = lineage_dirs
    assert main(["report", str(sft), str(base)]) == 0
    rows = capsys.readouterr().out.splitlines()[2:4]
    assert rows[0].startswith("| sft |") and rows[1].startswith("| base |")
    (sft / "posttrain.json").write_text(json.dumps({"stage": "sft", "parent": {"checkpoint": str(tmp_path / "gone")}}))
    assert main(["report", str(rl)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2
