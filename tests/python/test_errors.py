"""Bad input gets a clear Python exception, never a crash."""

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config, random_batch


@pytest.fixture
def model():
    return nw.Model(micro_config(), seed=0)


def test_wrong_dtype(model):
    tokens, targets = random_batch(model.config, 2, 8)
    with pytest.raises(ValueError, match="integer dtype"):
        model.forward_backward(tokens.astype(np.float32), targets)
    with pytest.raises(ValueError, match="integer dtype"):
        model.forward(tokens, targets.astype(np.float64))


def test_wrong_shape(model):
    tokens, targets = random_batch(model.config, 2, 8)
    with pytest.raises(ValueError, match="2 dimensions"):
        model.forward_backward(tokens.reshape(-1), targets.reshape(-1))
    with pytest.raises(ValueError, match="same shape"):
        model.forward_backward(tokens, targets[:, :4])
    with pytest.raises(ValueError, match="seq_len"):
        long = np.zeros((1, model.config.seq_len + 1), dtype=np.int64)
        model.forward_backward(long, long)


def test_token_ids_out_of_range(model):
    tokens, targets = random_batch(model.config, 2, 8)
    bad = tokens.copy()
    bad[1, 3] = model.config.vocab_size
    with pytest.raises(ValueError, match="token id 37"):
        model.forward_backward(bad, targets)
    bad[1, 3] = -1
    with pytest.raises(ValueError, match="token id -1"):
        model.forward(bad, targets)
    bad_targets = targets.copy()
    bad_targets[0, 0] = -2
    with pytest.raises(ValueError, match="target id -2"):
        model.forward_backward(tokens, bad_targets)
    bad_targets[0, 0] = 2**40
    with pytest.raises(ValueError, match="does not fit in int32"):
        model.forward_backward(tokens, bad_targets)


@pytest.mark.parametrize("overrides, message", [
    ({"top_k": 5}, "top_k"),
    ({"d_model": 17}, "divisible by n_head"),
    ({"n_head": 3, "n_kv_head": 2, "d_model": 18}, "n_kv_head"),
    ({"activation": "gelu"}, "activation"),
    ({"window_pattern": "SLX"}, "window_pattern"),
    ({"n_dense_layers": 4}, "n_dense_layers"),
    ({"head_dim": 7}, "head_dim"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"softcap": -1.0}, "softcap"),
])
def test_invalid_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        nw.Model(micro_config(**overrides))


def test_config_field_errors():
    with pytest.raises(ValueError, match="no field 'd_modle'"):
        nw.ModelConfig(d_modle=64)
    with pytest.raises(ValueError, match="wrong type"):
        nw.ModelConfig(d_model="wide")
    with pytest.raises(ValueError, match="unknown preset"):
        nw.ModelConfig.preset("huge")


def test_parameter_access_errors(model):
    with pytest.raises(ValueError, match="no tensor named"):
        model.get_param("nope")
    with pytest.raises(ValueError, match="expected shape"):
        model.set_param("embed", np.zeros((3, 3), dtype=np.float32))


def test_bad_device_and_dtype():
    cfg = micro_config()
    with pytest.raises(ValueError, match="device"):
        nw.Model(cfg, device="tpu")
    with pytest.raises(ValueError, match="dtype"):
        nw.Model(cfg, dtype="float16")
    if not nw.cuda_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            nw.Model(cfg, device="cuda")


def test_bad_optimizer_arguments(model):
    cfg = nw.OptimizerConfig()
    cfg.muon_momentum = 1.5
    with pytest.raises(ValueError, match="muon_momentum"):
        nw.Optimizer(model, cfg)
    opt = nw.Optimizer(model)
    with pytest.raises(ValueError, match="lr_mult"):
        opt.step(lr_mult=-1.0)
    with pytest.raises(ValueError, match="balance_gamma"):
        opt.step(balance_gamma=-0.1)


@pytest.mark.parametrize("overrides, message", [
    ({"n_layer": 10**9}, "n_layer must be <= 4096"),  # main built layer names for 120 s
    ({"d_model": 2**20}, "d_model must be <= 65536"),
    ({"n_experts": 10**6, "top_k": 1}, "n_experts must be <= 4096"),
    ({"route_scale": float("inf")}, "route_scale must be finite"),  # main: a NaN loss
    ({"norm_eps": float("inf")}, "norm_eps must be finite"),
    ({"softcap": float("inf")}, "softcap must be finite"),
])
def test_config_upper_bounds(overrides, message):
    with pytest.raises(ValueError, match=message):
        nw.Model(micro_config(**overrides))


def test_config_too_big_for_memory_fails_before_allocating():
    # Within every per-field bound, but ~5.6e14 parameters: named with the memory it needs, not a MemoryError.
    huge = micro_config(vocab_size=2**30, d_model=2**16, n_head=4, n_kv_head=4, head_dim=16)
    with pytest.raises(ValueError, match=r"parameters: its weights and gradients need [0-9.e+]+ GiB.*machine's"):
        nw.Model(huge)


def test_unsigned_ids_beyond_int32(model):
    tokens, targets = random_batch(model.config, 2, 8)
    wide = targets.astype(np.uint64)
    wide[0, 0] = 2**64 - 1  # main wrapped this to -1, the ignore index: loss 0 for that position, no error
    with pytest.raises(ValueError, match="targets value 18446744073709551615 does not fit in int32"):
        model.forward_backward(tokens, wide)


def test_generate_length_overflow(model):
    prompt = np.zeros((1, 2), np.int32)
    with pytest.raises(ValueError, match=r"max_new_tokens \(2147483647\) must be at most seq_len"):
        model.generate(prompt, 2**31 - 1)  # main: "negative dimensions are not allowed"
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(prompt, -1)


def test_ns_steps_beyond_int32():
    cfg = nw.OptimizerConfig()
    with pytest.raises(ValueError, match="ns_steps 1099511627776 is out of range"):
        cfg.ns_steps = 2**40  # main: pybind TypeError
    cfg.ns_steps = 7
    assert cfg.ns_steps == 7


def test_tokenizer_edges():
    from nanowhale.data import train_tokenizer

    tok = train_tokenizer(["hello world"] * 10, vocab_size=300)
    for bad in (2**31, 2**70, -1):
        with pytest.raises(ValueError, match=f"token id {bad} is outside the vocabulary"):
            tok.decode([bad])  # main: pybind "Unable to cast"
    for call in (lambda s: tok.encode(s), lambda s: tok.encode_array(s), lambda s: tok.encode_batch(["ok", s]),
                 lambda s: train_tokenizer([s], vocab_size=300)):
        with pytest.raises(ValueError, match="lone surrogate at index 2"):
            call("ab\ud800c")  # main: TypeError


def test_messages_name_the_source_line_only_when_debugging(monkeypatch):
    bad = nw.ModelConfig.preset("tiny").to_dict()
    bad["d_model"] = 130
    monkeypatch.delenv("NANOWHALE_DEBUG", raising=False)
    with pytest.raises(ValueError) as e:
        nw.ModelConfig.from_dict(bad).validate()
    assert str(e.value) == "ModelConfig.d_model (130) must be divisible by n_head (4)"
    monkeypatch.setenv("NANOWHALE_DEBUG", "1")  # read when the error is raised: no restart needed
    with pytest.raises(ValueError, match=r"must be divisible by n_head \(4\) \[.*csrc/model/config\.cpp:\d+\]$"):
        nw.ModelConfig.from_dict(bad).validate()
