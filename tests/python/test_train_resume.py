"""Resume: a run stopped after a checkpoint and resumed reproduces the uninterrupted run bit for bit (CPU)."""

import numpy as np
import pytest

import nanowhale as nw
from nanowhale.checkpoint import open_checkpoint
from train_fixtures import micro_run_config


def _params(run_dir):
    model = nw.load(run_dir).model
    return {n: model.get_param(n) for n in model.parameter_names()} | \
           {n: model.get_buffer(n) for n in model.buffer_names()}


@pytest.mark.parametrize("stop_at", [1, 4, 7])
def test_resume_is_bit_identical(micro_data, tmp_path, stop_at):
    data, vocab = micro_data
    kw = dict(train={"steps": 10, "balance_decay_start": 0.2, "balance_decay_end": 0.9, "warmup_frac": 0.1},
              eval={"every": 3}, optim={"muon_weight_decay": 0.01})
    full = nw.train(micro_run_config(data, tmp_path / "full", vocab, **kw), progress=False)
    part = nw.train(micro_run_config(data, tmp_path / "part", vocab, **kw), progress=False,
                    _stop_after_steps=stop_at)
    assert part["status"] == "stopped" and part["losses"] == full["losses"][:stop_at]
    assert open_checkpoint(tmp_path / "part").meta["step"] == stop_at
    rest = nw.train(resume=tmp_path / "part", progress=False)
    assert rest["status"] == "done"
    assert part["losses"] + rest["losses"] == full["losses"]
    assert rest["val_bpb"] == full["val_bpb"]
    assert rest["tokens"] == full["tokens"]
    a, b = _params(tmp_path / "full"), _params(tmp_path / "part")
    for n in a:
        assert np.array_equal(a[n], b[n]), n


def test_resume_with_overrides_extends_a_run(micro_data, tmp_path):
    data, vocab = micro_data
    nw.train(micro_run_config(data, tmp_path / "r", vocab, train={"steps": 3}), progress=False)
    more = nw.train(resume=tmp_path / "r", overrides=["train.steps=5"], progress=False)
    assert more["steps"] == 5 and len(more["losses"]) == 2
    with pytest.raises(ValueError, match=r"train\.nope"):
        nw.train(resume=tmp_path / "r", overrides=["train.nope=1"], progress=False)


def test_metrics_after_the_checkpoint_are_dropped_on_resume(micro_data, tmp_path):
    import json

    data, vocab = micro_data
    run = tmp_path / "m"
    nw.train(micro_run_config(data, run, vocab, train={"steps": 6}), progress=False, _stop_after_steps=3)
    with open(run / "metrics.jsonl", "a") as f:  # as if steps 4-5 ran before a kill, the last line cut short
        f.write(json.dumps({"step": 4, "loss": 1.0}) + "\n" + json.dumps({"step": 5, "loss": 1.0}) + "\n{\"st")
    nw.train(resume=run, progress=False)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if "event" not in json.loads(x)]
    assert steps == [1, 2, 3, 4, 5, 6]
