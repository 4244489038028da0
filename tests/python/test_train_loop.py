"""The training loop end to end on a micro model: loss falls, metrics, summary, schedules, divergence."""

import json
import math

import numpy as np
import pytest

import nanowhale as nw
from nanowhale import schedule
from nanowhale.trainer import SUMMARY_KEYS, format_summary
from train_fixtures import micro_run_config


def test_loss_falls_and_run_directory_is_complete(micro_data, tmp_path):
    data, vocab = micro_data
    cfg = micro_run_config(data, tmp_path / "run", vocab, train={"steps": 30}, eval={"every": 10},
                           run={"log_every": 1})
    result = nw.train(cfg, progress=False)
    assert result["status"] == "done"
    losses = result["losses"]
    assert len(losses) == 30
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 0.5, losses
    assert 0 < result["val_bpb"] < 20
    run = tmp_path / "run"
    assert (run / "config.toml").exists() and json.loads((run / "config.json").read_text())["train"]["steps"] == 30
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "event" not in r]
    assert [r["step"] for r in steps] == list(range(1, 31))
    for key in ("loss", "balance_loss", "lr_mult", "grad_norm", "tok_per_s", "mfu", "gflops", "experts"):
        assert key in steps[0], key
    assert len(steps[0]["experts"]) == 1 and sum(steps[0]["experts"][0]["load"]) == 256 * 2
    assert {"dead", "max_violation"} <= set(steps[0]["experts"][0])
    evals = [r for r in lines if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert evals[-1]["val_bpb"] == result["val_bpb"]
    # The LR decays over the last half to 0 (the last step runs at progress 29/30).
    assert steps[0]["lr_mult"] == 1.0 and steps[-1]["lr_mult"] == pytest.approx(1 / 15)
    summary = format_summary(result)
    got = dict(line.split(": ", 1) for line in summary.splitlines()[1:])
    assert list(got) == list(SUMMARY_KEYS)
    assert float(got["val_bpb"]) == pytest.approx(result["val_bpb"], abs=1e-6)
    assert int(got["params_total"]) > int(got["params_active"]) > 0
    assert got["precision"] == "fp32"  # train.precision auto: fp32 on the CPU
    assert got["cuda_graph"] == "off"  # train.cuda_graph auto: graphs only on a GPU
    # The checkpoint loads back into the same function.
    loaded = nw.load(run)
    assert loaded.step == 30
    assert loaded.val_bpb()["val_bpb"] == result["val_bpb"]


def test_same_seed_same_losses_different_seed_different(micro_data, tmp_path):
    data, vocab = micro_data
    a = nw.train(micro_run_config(data, tmp_path / "a", vocab, train={"steps": 4}), progress=False)
    b = nw.train(micro_run_config(data, tmp_path / "b", vocab, train={"steps": 4}), progress=False)
    c = nw.train(micro_run_config(data, tmp_path / "c", vocab, train={"steps": 4, "seed": 1}), progress=False)
    assert a["losses"] == b["losses"] and a["val_bpb"] == b["val_bpb"]
    assert a["losses"] != c["losses"]


def test_time_budget_run_stops_on_time(micro_data, tmp_path):
    data, vocab = micro_data
    cfg = micro_run_config(data, tmp_path / "t", vocab, train={"time_budget": 0.5, "clock_skip_steps": 2})
    result = nw.train(cfg, progress=False)
    assert result["status"] == "done"
    assert result["steps"] > 2
    assert 0.5 <= result["training_seconds"] < 0.5 + 1.0


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_checkpoint(micro_data, tmp_path):
    data, vocab = micro_data
    big = {"lr": 1e38}
    cfg = micro_run_config(data, tmp_path / "nan", vocab, train={"steps": 20},
                           optim={"muon_lr": 1e38, "grad_clip": 0.0, "embed": big, "head": big, "router": big,
                                  "scalar": big}, run={"checkpoint_every": 1})
    messages = []
    result = nw.train(cfg, progress=False, log=messages.append)
    assert result["status"] == "diverged"
    assert any("non-finite" in m and "last good checkpoint" in m for m in messages), messages
    assert result["steps"] < 20
    # The last checkpoint is the last finite step and loads.
    loaded = nw.load(tmp_path / "nan")
    assert loaded.step == result["steps"]


def test_existing_run_directory_is_not_overwritten(micro_data, tmp_path):
    data, vocab = micro_data
    cfg = micro_run_config(data, tmp_path / "r", vocab, train={"steps": 2})
    nw.train(cfg, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        nw.train(cfg, progress=False)


def test_vocab_mismatch_names_the_key(micro_data, tmp_path):
    data, vocab = micro_data
    cfg = micro_run_config(data, tmp_path / "v", vocab)
    cfg["model"]["vocab_size"] = vocab + 1
    with pytest.raises(ValueError, match=r"model\.vocab_size"):
        nw.train(cfg, progress=False)


def test_schedules():
    assert schedule.lr_mult(0.0, 0.0, 0.5, 0.0) == 1.0
    assert schedule.lr_mult(0.5, 0.0, 0.5, 0.0) == 1.0
    assert schedule.lr_mult(0.75, 0.0, 0.5, 0.0) == pytest.approx(0.5)
    assert schedule.lr_mult(1.0, 0.0, 0.5, 0.1) == pytest.approx(0.1)
    assert schedule.lr_mult(0.05, 0.1, 0.5, 0.0) == pytest.approx(0.5)
    assert schedule.lr_mult(0.0, 0.1, 0.5, 0.0) > 0
    assert schedule.wd_mult(0.25, True) == 0.75 and schedule.wd_mult(0.25, False) == 1.0
    assert schedule.muon_momentum(0.0, 0.85, 0.95, 0.1) == pytest.approx(0.85)
    assert schedule.muon_momentum(0.05, 0.85, 0.95, 0.1) == pytest.approx(0.90)
    assert schedule.muon_momentum(0.5, 0.85, 0.95, 0.1) == 0.95
    assert schedule.balance_gamma(0.5, 1e-3, 0.7, 0.9) == 1e-3
    assert schedule.balance_gamma(0.8, 1e-3, 0.7, 0.9) == pytest.approx(5e-4)
    assert schedule.balance_gamma(0.95, 1e-3, 0.7, 0.9) == 0.0


@pytest.mark.parametrize("budget", [0.0, 0.3])
def test_progress_bar_shows_step_loss_and_speed(micro_data, tmp_path, capsys, budget):
    data, vocab = micro_data
    cfg = micro_run_config(data, tmp_path / "p", vocab, train={"steps": 3, "time_budget": budget})
    nw.train(cfg, progress=True)
    err = capsys.readouterr().err
    assert "loss" in err and "tok/s" in err and "step" in err


def test_without_data_dir_the_default_corpus_is_prepared(tmp_path, monkeypatch):
    """The main job's path: no data.dir -> the Python standard library, prepared under $NANOWHALE_CACHE."""
    monkeypatch.setenv("NANOWHALE_CACHE", str(tmp_path / "cache"))
    cfg = micro_run_config("", tmp_path / "run", 512, train={"steps": 1}, data={"tokenizer_train_mb": 1.0},
                           eval={"tokens": 256})
    result = nw.train(cfg, progress=False, log=lambda *a: None)
    assert result["status"] == "done" and math.isfinite(result["val_bpb"])
    data = tmp_path / "cache" / "data" / "stdlib-v512"
    assert (data / "tokenizer.nwtok").exists() and list(data.glob("val_*.bin"))


def test_cuda_graph_on_needs_a_gpu_device(micro_data, tmp_path):
    data, vocab = micro_data
    cfg = micro_run_config(data, tmp_path / "run", vocab, train={"device": "cpu", "cuda_graph": "on"})
    with pytest.raises(ValueError, match=r"train\.cuda_graph: on needs train\.device cuda"):
        nw.train(cfg, progress=False)
