"""Run configuration: presets, TOML files, --set overrides, and errors that name the key."""

import pytest

import nanowhale as nw
from nanowhale.config import RunConfig, defaults, parse_override, resolve, to_toml


def test_presets_resolve_and_match_the_engine():
    tiny = resolve()
    assert tiny.preset == "tiny"
    assert tiny.model_config() == nw.ModelConfig.preset("tiny")
    big = resolve("nanowhale-100m")
    assert big.model_config() == nw.ModelConfig.preset("nanowhale-100m")
    assert big.train.batch_tokens % (big.train.micro_batch * big.model["seq_len"]) == 0


def test_overrides_and_toml_files(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text('[model]\nn_experts = 16\nactivation = "swiglu"\n[optim.embed]\nlr = 0.1\n[train]\nsteps = 7\n')
    cfg = resolve(files=[f], overrides=["optim.muon_lr=0.03", "train.steps=9", "model.activation=relu2",
                                        "sample.prompts=['a', 'b']", "train.wd_decay=false"])
    assert cfg.model["n_experts"] == 16
    assert cfg.model["activation"] == "relu2"  # the override wins over the file
    assert cfg.optim["muon_lr"] == 0.03 and cfg.optim["embed"]["lr"] == 0.1
    assert cfg.optimizer_config().embed.lr == pytest.approx(0.1)
    assert cfg.train.steps == 9 and cfg.train.wd_decay is False
    assert cfg.sample.prompts == ["a", "b"]
    # A preset chosen in a file.
    g = tmp_path / "big.toml"
    g.write_text('preset = "nanowhale-100m"\n')
    assert resolve(files=[g]).model["d_model"] == 512


def test_dict_and_toml_round_trip(tmp_path):
    cfg = resolve(overrides=["model.n_layer=3", "train.time_budget=12.5"])
    assert RunConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    f = tmp_path / "saved.toml"
    f.write_text(to_toml(cfg.to_dict()))
    assert resolve(files=[f]).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("override, key", [
    ("train.stepz=3", "train.stepz"),
    ("model.n_expert=16", "model.n_expert"),
    ("optim.embed.learning_rate=1", "optim.embed.learning_rate"),
    ("bogus.x=1", "bogus"),
    ("train.steps=0", "train.steps"),
    ("train.steps=2.5", "train.steps"),
    ("train.steps=abc", "train.steps"),
    ("train.wd_decay=1", "train.wd_decay"),
    ("train.batch_tokens=1000", "train.batch_tokens"),
    ("train.device=tpu", "train.device"),
    ("train.precision=fp16", "train.precision"),
    ("train.cuda_graph=maybe", "train.cuda_graph"),
    ("eval.tokens=3", "eval.tokens"),
    ("sample.top_p=0", "sample.top_p"),
    ("model.top_k=99", "top_k"),
    ("optim.muon_lr=-1", "muon_lr"),
    ("optim.embed=3", "optim.embed"),
])
def test_bad_keys_and_values_name_the_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        resolve(overrides=[override])


@pytest.mark.parametrize("override, key", [
    ("eval.tokens=1e308", "eval.tokens"),
    ("sample.max_new_tokens=4294967297", "sample.max_new_tokens"),
    ("train.time_budget=inf", "train.time_budget"),
    ("train.steps=1e12", "train.steps"),
    ("train.seed=-1", "train.seed"),
    ("train.threads=100000", "train.threads"),
    ("data.shard_tokens=1e15", "data.shard_tokens"),
    ("sample.temperature=nan", "sample.temperature"),
    ("run.log_every=1e10", "run.log_every"),
])
def test_non_model_keys_have_upper_bounds(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.") + r": must be in \[.*\].*, got"):
        resolve(overrides=[override])


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        resolve("huge")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_override("train.steps")
    with pytest.raises(ValueError, match="does not exist"):
        resolve(files=[tmp_path / "missing.toml"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        resolve(files=[bad])
    typo = tmp_path / "typo.toml"
    typo.write_text("[train]\nsteps = 3\nwarmup = 0.1\n")
    with pytest.raises(ValueError, match=r"train\.warmup"):
        resolve(files=[typo])
    with pytest.raises(ValueError, match=r"model\.d_modle"):
        RunConfig.from_dict({"model": {"d_modle": 3}})


def test_defaults_are_independent_copies():
    a, b = defaults(), defaults()
    a.model["d_model"] = 1
    a.optim["embed"]["lr"] = 9.0
    a.sample.prompts.append("x")
    assert b.model["d_model"] == 128 and b.optim["embed"]["lr"] != 9.0 and "x" not in b.sample.prompts


def test_non_utf8_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[train]\nsteps = 3 # caf\xe9\n")  # main: a bare UnicodeDecodeError
    with pytest.raises(ValueError, match=f"{path}: invalid TOML"):
        resolve(files=[str(path)])


@pytest.mark.parametrize("override, key", [("optim.ns_steps=1099511627776", "optim"),
                                           ("model.route_scale=inf", "model.*route_scale")])
def test_values_beyond_the_engine_name_the_key(override, key):
    with pytest.raises(ValueError, match=key):  # main: pybind TypeError, and a NaN loss
        resolve(overrides=[override])
