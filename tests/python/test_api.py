"""The Python API: configs, presets, parameter access, evaluation outputs, routing statistics."""

import math

import numpy as np

import nanowhale as nw
from conftest import micro_config, random_batch


def test_presets_and_parameter_counts():
    tiny = nw.ModelConfig.preset("tiny")
    big = nw.ModelConfig.preset("nanowhale-100m")
    assert 1e6 < tiny.num_params() < 10e6
    assert 0.8 * 118e6 <= big.num_params() <= 1.2 * 118e6
    assert big.num_active_params() < big.num_params() / 2
    model = nw.Model(micro_config(), seed=0)
    total = sum(model.get_param(n).size for n in model.parameter_names())
    assert total == model.num_params() == model.config.num_params()


def test_config_round_trip():
    cfg = micro_config(activation="swiglu")
    again = nw.ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert cfg.replace(top_k=1).top_k == 1 and cfg.top_k == 2
    assert "d_model=16" in repr(cfg)


def test_model_and_optimizer_configs_are_fixed_at_construction():
    """config is a copy: writing one of its attributes changes neither the model nor the optimizer, whose
    steps (and the CUDA graphs replaying them, which hold these values) keep what they were made with."""
    cfg = micro_config()
    model = nw.Model(cfg, seed=0)
    opt = nw.Optimizer(model)
    model.config.softcap = cfg.softcap + 1.0
    model.config.n_layer = cfg.n_layer + 1
    opt.config.muon_lr = 123.0
    opt.config.grad_clip = -1.0
    assert model.config == cfg
    assert opt.config.muon_lr == nw.OptimizerConfig().muon_lr and opt.config.grad_clip == nw.OptimizerConfig().grad_clip


def test_parameters_round_trip_and_seeded_init():
    cfg = micro_config()
    a, b, c = nw.Model(cfg, seed=0), nw.Model(cfg, seed=0), nw.Model(cfg, seed=1)
    for name in a.parameter_names():
        np.testing.assert_array_equal(a.get_param(name), b.get_param(name))
    assert not np.array_equal(a.get_param("embed"), c.get_param("embed"))
    assert not a.get_param("layers.0.attn.wo").any()  # zero-initialised output projections
    value = np.random.default_rng(0).normal(size=a.get_param("embed").shape).astype(np.float32)
    a.set_param("embed", value)
    np.testing.assert_array_equal(a.get_param("embed"), value)
    assert a.parameter_kind("embed") == "embedding"
    assert a.parameter_kind("layers.1.moe.router") == "router"
    assert a.parameter_kind("layers.1.moe.experts.w_in") == "matrix"


def test_initial_loss_is_near_uniform():
    cfg = micro_config()
    model = nw.Model(cfg, seed=0)
    tokens, targets = random_batch(cfg, 2, 8)
    assert abs(model.forward(tokens, targets) - math.log(cfg.vocab_size)) < 0.5


def test_eval_outputs_agree():
    cfg = micro_config()
    model = nw.Model(cfg, seed=0, dtype="float64")
    tokens, targets = random_batch(cfg, 2, 8, ignore_fraction=0.3)
    loss = model.forward(tokens, targets)
    per_token = model.token_losses(tokens, targets)
    assert per_token.shape == (2, 8)
    assert np.all(per_token[targets == -1] == 0)
    assert abs(per_token[targets >= 0].mean() - loss) < 1e-6
    logits = model.logits(tokens).astype(np.float64)
    assert logits.shape == (2, 8, cfg.vocab_size)
    assert np.abs(logits).max() <= cfg.softcap
    lse = np.log(np.exp(logits).sum(-1))
    valid = targets >= 0
    picked = np.take_along_axis(logits, np.maximum(targets, 0)[..., None], -1)[..., 0]
    np.testing.assert_allclose((lse - picked)[valid], per_token[valid], rtol=1e-5)
    # forward_backward reports the same loss and does not depend on evaluation having run
    assert abs(model.forward_backward(tokens, targets) - loss) < 1e-12


def test_all_targets_ignored():
    cfg = micro_config()
    model = nw.Model(cfg, seed=0)
    tokens, _ = random_batch(cfg, 1, 8)
    targets = -np.ones_like(tokens)
    assert model.forward_backward(tokens, targets) == 0.0
    assert model.last_balance_loss > 0  # the balance loss still has a gradient


def test_routing_stats():
    cfg = micro_config()
    model = nw.Model(cfg, seed=0)
    tokens, targets = random_batch(cfg, 2, 8)
    model.forward_backward(tokens, targets)
    stats = model.routing_stats()
    assert [s["layer"] for s in stats] == [1, 2]
    for s in stats:
        counts = np.array(s["tokens_per_expert"])
        assert counts.sum() == 2 * 8 * cfg.top_k
        assert s["dead_experts"] == int((counts == 0).sum())
        mean = counts.mean()
        assert abs(s["max_violation"] - (counts.max() - mean) / mean) < 1e-12
        assert len(s["bias"]) == cfg.n_experts


def test_threads_setting():
    before = nw.get_num_threads()
    nw.set_num_threads(1)
    assert nw.get_num_threads() == 1
    nw.set_num_threads(before)


def test_op_profiler():
    cfg = micro_config()
    model = nw.Model(cfg, seed=0)
    tokens, targets = random_batch(cfg, 2, 8)
    nw.reset_op_times()
    model.forward_backward(tokens, targets)
    assert nw.op_times() == {}  # off by default
    nw.profile_ops(True)
    try:
        model.forward_backward(tokens, targets)
    finally:
        nw.profile_ops(False)
    times = nw.op_times()
    assert times["attention_forward"][1] == cfg.n_layer
    assert times["moe_route"][1] == cfg.n_layer - cfg.n_dense_layers
    assert times["softcap_cross_entropy"][1] == 1
    assert all(seconds >= 0 for seconds, _ in times.values())
    nw.reset_op_times()
    assert nw.op_times() == {}
