"""Whole-model gradients against float64 central finite differences, for every parameter tensor.

The objective is what forward_backward differentiates: mean cross-entropy plus the balance loss.
Parameters are randomised first: zero-initialised output projections would hide upstream terms.
"""

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config, random_batch

EPS = 1e-5


def randomise(model, seed):
    rng = np.random.default_rng(seed)
    for name in model.parameter_names():
        shape = model.get_param(name).shape
        scale = 1.0 if model.parameter_kind(name) == "scalar" else 0.4
        value = rng.normal(1.0 if model.parameter_kind(name) == "scalar" else 0.0, scale, size=shape)
        model.set_param(name, value)


def objective(model, tokens, targets):
    loss = model.forward(tokens, targets)
    return loss + model.last_balance_loss


def check_all_parameters(cfg, tokens, targets, seed=0, per_tensor=4, bias=None):
    model = nw.Model(cfg, seed=seed, dtype="float64")
    randomise(model, seed)
    if bias is not None:
        for name in model.buffer_names():
            model.set_buffer(name, bias)
    model.zero_grad()
    model.forward_backward(tokens, targets)
    rng = np.random.default_rng(seed + 1)
    checked = 0
    for name in model.parameter_names():
        param = model.get_param(name)
        grad = model.get_grad(name)
        flat = param.reshape(-1)
        for idx in rng.choice(flat.size, size=min(per_tensor, flat.size), replace=False):
            original = flat[idx]
            flat[idx] = original + EPS
            model.set_param(name, param)
            up = objective(model, tokens, targets)
            flat[idx] = original - EPS
            model.set_param(name, param)
            down = objective(model, tokens, targets)
            flat[idx] = original
            model.set_param(name, param)
            numeric = (up - down) / (2 * EPS)
            analytic = grad.reshape(-1)[idx]
            assert abs(numeric - analytic) <= 1e-6 + 1e-5 * abs(numeric), (
                f"{name}[{idx}]: analytic {analytic:.10g} vs numeric {numeric:.10g}")
            checked += 1
    assert checked >= 2 * len(model.parameter_names())


@pytest.mark.parametrize("overrides", [
    {},                                                   # relu2, GQA, sliding + full windows, 1 shared
    {"activation": "swiglu", "n_shared": 2},              # several shared experts
    {"top_k": 1},
    {"top_k": 4},                                         # top_k == n_experts
    {"tie_embeddings": True, "softcap": 0.0, "n_kv_head": 2},
    {"n_dense_layers": 0, "route_scale": 2.5},
])
def test_model_gradients(overrides):
    cfg = micro_config(**overrides)
    tokens, targets = random_batch(cfg, batch=2, seq=7, seed=1, ignore_fraction=0.2)
    check_all_parameters(cfg, tokens, targets)


def test_gradients_with_balance_bias_and_an_unused_expert():
    cfg = micro_config()
    tokens, targets = random_batch(cfg, batch=2, seq=6, seed=2)
    # Expert 0 is never selected (huge negative bias): its weights must get exactly zero gradient
    # from the routed path, and everything else must still check out.
    bias = np.array([-100.0, 0.3, -0.2, 0.1])
    check_all_parameters(cfg, tokens, targets, bias=bias)
    model = nw.Model(cfg, seed=0, dtype="float64")
    randomise(model, 0)
    for name in model.buffer_names():
        model.set_buffer(name, bias)
    model.forward_backward(tokens, targets)
    for stats in model.routing_stats():
        assert stats["tokens_per_expert"][0] == 0
        assert stats["dead_experts"] >= 1
    for name in model.parameter_names():
        if "experts.w_" in name:
            assert np.all(model.get_grad(name)[0] == 0.0), name


def test_float32_gradients_match_float64():
    """The float32 training path computes the same gradients as the float64 oracle, to fp32 precision."""
    cfg = micro_config()
    tokens, targets = random_batch(cfg, batch=2, seq=8, seed=3)
    m64 = nw.Model(cfg, seed=0, dtype="float64")
    randomise(m64, 5)
    m32 = nw.Model(cfg, seed=0)
    for name in m64.parameter_names():
        m32.set_param(name, m64.get_param(name))
    l64 = m64.forward_backward(tokens, targets)
    l32 = m32.forward_backward(tokens, targets)
    assert abs(l64 - l32) < 1e-4 * abs(l64)
    for name in m64.parameter_names():
        g64, g32 = m64.get_grad(name), m32.get_grad(name)
        scale = np.abs(g64).max() + 1e-12
        assert np.abs(g64 - g32).max() <= 2e-3 * scale, name
