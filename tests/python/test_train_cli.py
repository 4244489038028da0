"""The `nanowhale train / eval / sample` commands, in-process through cli.main."""

import json

import pytest

from nanowhale import cli
from nanowhale.config import to_toml
from train_fixtures import micro_run_config


def _summary(out: str) -> dict:
    block = out[out.rindex("---\n") + 4:]
    return dict(line.split(": ", 1) for line in block.strip().splitlines())


def test_train_eval_sample_and_resume(micro_data, tmp_path, capsys):
    data, vocab = micro_data
    cfg = micro_run_config(data, tmp_path / "unused", vocab, sample={"n": 2, "max_new_tokens": 8})
    del cfg["run"]
    f = tmp_path / "micro.toml"
    f.write_text(to_toml(cfg))
    run = tmp_path / "run"
    rc = cli.main(["train", "--config", str(f), "--set", "train.steps=4", "--run-dir", str(run), "--no-progress",
                   "--set", "optim.muon_lr=0.03"])
    out = capsys.readouterr().out
    assert rc == 0
    s = _summary(out)
    assert s["status"] == "done" and s["steps"] == "4" and float(s["val_bpb"]) > 0
    for key in ("training_seconds", "total_seconds", "tokens", "peak_memory_mb", "params_total", "params_active"):
        assert key in s
    assert out.count("--- sample") == 2
    saved = json.loads((run / "config.json").read_text())
    assert saved["optim"]["muon_lr"] == 0.03 and saved["train"]["steps"] == 4

    assert cli.main(["eval", "--ckpt", str(run)]) == 0
    ev = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    assert float(ev["val_bpb"]) == pytest.approx(float(s["val_bpb"]), abs=1e-6)
    texts = [tmp_path / "a.txt", tmp_path / "b.txt"]
    texts[0].write_text("the whale swims deep under cold grey water " * 10)
    texts[1].write_text("a reef of stone")
    assert cli.main(["eval", "--ckpt", str(run), *map(str, texts), "--batch-size", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(str(texts[0])) and lines[1].startswith(str(texts[1])) and " bpb " in lines[0]
    total = dict(line.split(": ") for line in lines[2:])
    assert int(total["total_bytes"]) == sum(len(t.read_bytes()) for t in texts) and "val_bpb" not in total

    assert cli.main(["sample", "--ckpt", str(run), "--prompt", "the whale", "-n", "2", "--max-new-tokens", "5",
                     "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 2 and "the whale" in out

    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=6", "--no-progress"]) == 0
    assert _summary(capsys.readouterr().out)["steps"] == "6"


@pytest.mark.parametrize("args, key", [
    (["--set", "train.stepz=3"], "train.stepz"),
    (["--set", "model.n_experts=0"], "n_experts"),
    (["--preset", "huge"], "preset"),
    (["--steps", "0"], "train.steps"),
])
def test_bad_configs_exit_2_naming_the_key(args, key, tmp_path, capsys):
    assert cli.main(["train", "--run-dir", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert "error" in err and key in err


def test_corrupt_checkpoint_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "meta.json").write_text("{")
    assert cli.main(["sample", "--ckpt", str(tmp_path)]) == 2
    assert "corrupt" in capsys.readouterr().err
