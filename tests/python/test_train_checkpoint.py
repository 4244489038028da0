"""Checkpoints: safetensors format, atomic writes under SIGKILL, keep-last-N, clear errors when damaged."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import nanowhale as nw
from nanowhale import safetensors_io
from nanowhale.checkpoint import open_checkpoint
from train_fixtures import micro_run_config


@pytest.fixture(scope="module")
def trained(micro_data, tmp_path_factory):
    """A finished 3-step run checkpointed every step, keeping 2."""
    data, vocab = micro_data
    run = tmp_path_factory.mktemp("ckpt") / "run"
    nw.train(micro_run_config(data, run, vocab, train={"steps": 3}, run={"checkpoint_every": 1, "keep": 2}),
             progress=False)
    return run


def test_layout_keep_last_n_and_latest(trained):
    ckpts = trained / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_000002", "step_000003"]
    assert (ckpts / "latest").read_text().strip() == "step_000003"
    ck = open_checkpoint(trained)
    assert ck.dir.name == "step_000003"
    meta = ck.meta
    assert meta["step"] == 3 and meta["tokens"] == 3 * 256
    assert meta["config"]["train"]["steps"] == 3 and meta["config"]["model"]["d_model"] == 32
    assert isinstance(meta["loader_state"], list) and meta["tokenizer"]["fingerprint"]
    assert set(meta["files"]) == {"model.safetensors", "optimizer.safetensors", "tokenizer.nwtok"}
    assert open_checkpoint(ckpts / "step_000002").meta["step"] == 2


def test_safetensors_library_reads_the_weights(trained):
    st_numpy = pytest.importorskip("safetensors.numpy")  # in the test extra; the format is written by hand
    ck = open_checkpoint(trained)
    model = nw.load(trained).model
    weights = st_numpy.load_file(str(ck.dir / "model.safetensors"))
    assert set(weights) == set(model.parameter_names()) | set(model.buffer_names())
    for n in model.parameter_names():
        assert weights[n].dtype == np.float32 and np.array_equal(weights[n], model.get_param(n)), n
    opt = st_numpy.load_file(str(ck.dir / "optimizer.safetensors"))
    assert set(opt) == {f"{w}.{n}" for w in ("exp_avg", "exp_avg_sq") for n in model.parameter_names()}
    # And our reader reads what the library writes.
    st_numpy.save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.int64)},
                       str(trained / "lib.safetensors"), metadata={"k": "v"})
    tensors, meta = safetensors_io.read(trained / "lib.safetensors")
    assert meta == {"k": "v"} and tensors["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and tensors["b"].dtype == np.int64


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import nanowhale as nw
    from nanowhale import checkpoint
    stage = sys.argv[2]
    def hook(s):
        if s == stage:
            print("AT", s, flush=True)
            time.sleep(120)
    checkpoint._test_hook = hook
    nw.train(resume=sys.argv[1], progress=False, log=lambda *a: None, _stop_after_steps=1)
    print("FINISHED", flush=True)
""")


@pytest.mark.parametrize("stage", ["start", "half:model.safetensors", "model", "half:optimizer.safetensors",
                                   "optimizer", "meta", "renamed", "latest"])
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(micro_data, tmp_path, stage):
    data, vocab = micro_data
    run = tmp_path / "run"
    cfg = micro_run_config(data, run, vocab, train={"steps": 6})
    nw.train(cfg, progress=False, _stop_after_steps=2)
    before = (run / "checkpoints" / "step_000002" / "model.safetensors").read_bytes()
    env = dict(os.environ, PYTHONPATH=str(Path(nw.__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(run), stage], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("AT"), (line, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    ck = open_checkpoint(run)
    expected = 3 if stage == "latest" else 2
    assert ck.meta["step"] == expected
    loaded = nw.load(run)
    assert loaded.step == expected
    assert (run / "checkpoints" / "step_000002" / "model.safetensors").read_bytes() == before
    # The run continues from there and ends like an uninterrupted one.
    rest = nw.train(resume=run, progress=False)
    full = nw.train(micro_run_config(data, tmp_path / "full", vocab, train={"steps": 6}), progress=False)
    assert rest["losses"] == full["losses"][expected:]
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the next save removed the debris


def _copy_ckpt(trained, tmp_path):
    import shutil

    dst = tmp_path / "c"
    shutil.copytree(open_checkpoint(trained).dir, dst)
    return dst


def test_truncated_weights_give_a_clear_error(trained, tmp_path):
    d = _copy_ckpt(trained, tmp_path)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt.*model.safetensors"):
        nw.load(d)


def test_flipped_byte_gives_a_clear_error(trained, tmp_path):
    d = _copy_ckpt(trained, tmp_path)
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        nw.load(d)


def test_bad_metadata_and_missing_files(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (open_checkpoint(run).dir / "optimizer.safetensors").unlink()
    nw.load(run)  # inference needs no optimizer state
    with pytest.raises(ValueError, match="incomplete.*optimizer.safetensors"):
        nw.train(resume=run, progress=False)
    d = _copy_ckpt(trained, tmp_path)
    with pytest.raises(ValueError, match="not inside a run directory"):
        nw.train(resume=d, progress=False)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt.*meta.json"):
        nw.load(d)
    (d / "meta.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a nanowhale checkpoint"):
        nw.load(d)
    with pytest.raises(ValueError, match="no checkpoint"):
        nw.load(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        nw.load(tmp_path / "nowhere")


def test_format_errors_without_metadata_checks(tmp_path):
    f = tmp_path / "x.safetensors"
    with open(f, "wb") as fh:
        safetensors_io.write(fh, {"w": np.ones((4, 4), np.float32)}, {"a": "b"})
    tensors, meta = safetensors_io.read(f)
    assert meta == {"a": "b"} and np.array_equal(tensors["w"], np.ones((4, 4), np.float32))
    raw = f.read_bytes()
    f.write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="truncated"):
        safetensors_io.read(f)
    f.write_bytes(raw[:5])
    with pytest.raises(ValueError, match="truncated"):
        safetensors_io.read(f)


def test_weights_of_another_model_are_rejected(trained, micro_data):
    ck = open_checkpoint(trained)
    other = nw.ModelConfig.from_dict({**ck.config["model"], "d_model": 48})
    with pytest.raises(ValueError, match="shape"):
        ck.load_model(nw.Model(other))


def test_load_runs_in_the_runs_precision_unless_told(trained):
    """A checkpoint evaluates in its run's train.precision resolved for the device (auto: fp32 on the CPU,
    bf16 on a GPU, as the run's own evals did); precision= overrides it."""
    assert nw.load(trained).model.precision == "fp32"
    bf16 = nw.load(trained, precision="bf16")
    assert bf16.model.precision == "bf16"
    assert bf16.val_bpb()["val_bpb"] != nw.load(trained).val_bpb()["val_bpb"]
    with pytest.raises(ValueError, match="precision must be auto, bf16 or fp32"):
        nw.load(trained, precision="fp16")
