"""Checkpoints that were edited consistently (meta.json's hashes regenerated, as a hand edit or a foreign
tool would) are still refused: every safetensors entry is checked against the model's own layout, and every
meta.json key nanowhale reads is checked for type and range."""

import json
import struct

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config
from nanowhale import checkpoint as ckpt
from nanowhale import safetensors_io
from nanowhale.data.sources import sha256_of


@pytest.fixture
def saved(tmp_path):
    """(checkpoint dir, model config) of an untrained micro model with its optimizer."""
    cfg = micro_config()
    model = nw.Model(cfg, seed=0)
    opt = nw.Optimizer(model)
    d = ckpt.save(tmp_path / "checkpoints", 1, model, opt, {"config": {}, "tokens": 0, "loader_state": [1, 2]}, None)
    return d, cfg


def edit_header(path, edit):
    """Applies edit(header dict) to a safetensors file's JSON header, keeping the data bytes."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def edit_meta(d, edit, rehash=True):
    meta = json.loads((d / "meta.json").read_text())
    if rehash:
        for name in meta["files"]:
            meta["files"][name] = {"bytes": (d / name).stat().st_size, "sha256": sha256_of(d / name)}
    edit(meta)
    (d / "meta.json").write_text(json.dumps(meta))


def load(d, cfg):
    model = nw.Model(cfg, seed=1)
    ckpt.open_checkpoint(d).load_model(model)
    return model


def test_round_trip(saved):
    d, cfg = saved
    assert np.array_equal(load(d, cfg).get_param("final_norm"), nw.Model(cfg, seed=0).get_param("final_norm"))


def test_wrong_dtype_with_a_matching_hash(saved):
    # main loaded the int32 bits cast to float (final_norm ~ 1.08e9).
    d, cfg = saved
    edit_header(d / "model.safetensors", lambda h: h["final_norm"].update(dtype="I32"))
    edit_meta(d, lambda m: None)
    with pytest.raises(ValueError, match=r"corrupt.*model.safetensors.*'final_norm' has dtype I32.*F32"):
        load(d, cfg)


def test_offsets_into_another_tensor(saved):
    d, cfg = saved

    def alias(h):  # final_norm's bytes become the start of embed's
        a, b = h["final_norm"]["data_offsets"]
        h["final_norm"]["data_offsets"] = [0, b - a]
    edit_header(d / "model.safetensors", alias)
    edit_meta(d, lambda m: None)
    with pytest.raises(ValueError, match="overlapping tensors or a gap"):
        load(d, cfg)


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.update(renamed=h.pop("final_norm")), "lacks final_norm"),
    (lambda h: h.update(extra={"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}), "does not: extra"),
    (lambda h: h["final_norm"].update(shape=[4, 4]), "does not fit|shape"),
    (lambda h: h["final_norm"].update(shape=[16.0]), "bad shape"),
    (lambda h: h["final_norm"].update(data_offsets=[0, 2**70]), "do not fit"),
    (lambda h: h["final_norm"].update(dtype="F8"), "unknown dtype"),
    (lambda h: h["final_norm"].update(dtype=["F32"]), "unknown dtype"),  # found by the fuzzer: a TypeError
    (lambda h: h.update(__metadata__={"a": 1}), "__metadata__"),
])
def test_bad_entries_with_a_matching_hash(saved, edit, message):
    d, cfg = saved
    edit_header(d / "model.safetensors", edit)
    edit_meta(d, lambda m: None)
    with pytest.raises(ValueError, match=message):
        load(d, cfg)


def test_repeated_json_key(tmp_path):
    f = tmp_path / "x.safetensors"
    body = np.ones(2, np.float32).tobytes()
    entry = '{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
    text = f'{{"w":{entry},"w":{entry}}}'.encode()
    f.write_bytes(struct.pack("<Q", len(text)) + text + body)
    with pytest.raises(ValueError, match="'w' appears twice"):
        safetensors_io.read(f)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("files"), "lacks 'files'"),  # main skipped the hash check
    (lambda m: m.update(step=True), "'step' must be an integer"),  # main resumed at step 1
    (lambda m: m.update(step="3"), "'step' must be an integer"),
    (lambda m: m.pop("step"), "lacks 'step'"),
    (lambda m: m.update(config=[1]), "'config' must be a table"),
    (lambda m: m.update(files={"model.safetensors": {"bytes": "x"}}), "'files' must be"),
    (lambda m: m["files"].pop("model.safetensors"), "'files' must be"),
    (lambda m: m.update(tokenizer="abc"), "'tokenizer' must be"),  # main: AttributeError
    (lambda m: m.update(optimizer_steps=-1), "'optimizer_steps' must be"),
    (lambda m: m.pop("optimizer_steps"), "lacks 'optimizer_steps'"),
    (lambda m: m.update(loader_state={"a": 1}), "'loader_state' must be"),
    (lambda m: m.update(loader_states=[[1], "x"]), "'loader_states' must be"),
    (lambda m: m.update(train_seconds=None), "'train_seconds' must be"),
    (lambda m: m.update(version="1"), "'version' must be 1"),
])
def test_bad_meta_json(saved, edit, message):
    d, cfg = saved
    edit_meta(d, edit)
    with pytest.raises(ValueError, match=f"checkpoint {d}.*meta.json.*{message}"):
        load(d, cfg)


def test_meta_json_nan_and_resume_keys(saved):
    d, cfg = saved
    (d / "meta.json").write_text((d / "meta.json").read_text().replace('"step": 1', '"step": NaN'))
    with pytest.raises(ValueError, match="meta.json.*NaN"):
        ckpt.open_checkpoint(d)
    d2 = saved[0]
    edit_meta(d2, lambda m: (m.update(step=1), m.pop("tokens")))
    with pytest.raises(ValueError, match="lacks 'tokens' or 'loader_state"):
        ckpt.open_checkpoint(d2).resume_state()


def test_optimizer_state_checked_against_the_optimizer(saved):
    d, cfg = saved
    edit_header(d / "optimizer.safetensors", lambda h: h["exp_avg.final_norm"].update(dtype="I32"))
    edit_meta(d, lambda m: None)
    model = nw.Model(cfg, seed=1)
    with pytest.raises(ValueError, match="'exp_avg.final_norm' has dtype I32"):
        ckpt.open_checkpoint(d).load_optimizer(model, nw.Optimizer(model))


def test_config_that_does_not_validate(saved):
    d, cfg = saved
    edit_meta(d, lambda m: m["config"].update(model="F32"))  # main: the error named no checkpoint
    with pytest.raises(ValueError, match=f"checkpoint {d} is corrupt: meta.json 'config': model: expected a table"):
        ckpt.open_checkpoint(d)
