"""forward_backward(tokens, targets, weights): the loss sum_t w_t * CE_t and its gradient, whole model, float64."""

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config, random_batch
from test_model_gradients import randomise

EPS = 1e-5


def weighted_objective(model, tokens, targets, weights):
    """sum_t w_t * CE_t in float64 (the loss forward_backward returns), without keeping its gradient."""
    loss = model.forward_backward(tokens, targets, weights=weights)
    model.zero_grad()
    return loss


def test_weighted_gradient_matches_finite_differences():
    cfg = micro_config(balance_alpha=0.0)  # the objective is the weighted CE alone
    tokens, targets = random_batch(cfg, batch=2, seq=7, seed=3, ignore_fraction=0.2)
    weights = np.random.default_rng(4).normal(size=tokens.shape)  # both signs
    model = nw.Model(cfg, seed=0, dtype="float64")
    randomise(model, 0)
    model.zero_grad()
    model.forward_backward(tokens, targets, weights=weights)
    grads = {name: model.get_grad(name) for name in model.parameter_names()}  # before the objective zeroes them
    rng = np.random.default_rng(5)
    for name in model.parameter_names():
        param, grad = model.get_param(name), grads[name]
        flat = param.reshape(-1)
        for idx in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            x0 = flat[idx]
            flat[idx] = x0 + EPS
            model.set_param(name, param)
            up = weighted_objective(model, tokens, targets, weights)
            flat[idx] = x0 - EPS
            model.set_param(name, param)
            down = weighted_objective(model, tokens, targets, weights)
            flat[idx] = x0
            model.set_param(name, param)
            numeric, analytic = (up - down) / (2 * EPS), grad.reshape(-1)[idx]
            assert abs(numeric - analytic) <= 1e-6 + 1e-5 * abs(numeric), f"{name}[{idx}]: {analytic} vs {numeric}"


def test_weights_generalise_the_mean_and_ignore_minus_one_targets():
    cfg = micro_config()
    tokens, targets = random_batch(cfg, batch=2, seq=8, seed=6)
    targets[:, 1::2] = -1
    n = int((targets >= 0).sum())  # 8: 1/n is exact in the float32 weights
    a, b = nw.Model(cfg, seed=1, dtype="float64"), nw.Model(cfg, seed=1, dtype="float64")
    mean_loss = a.forward_backward(tokens, targets)
    weights = np.full(tokens.shape, 1.0 / n)
    weights[targets < 0] = 123.0  # ignored positions: their weight must not matter
    weighted_loss = b.forward_backward(tokens, targets, weights=weights)
    assert weighted_loss == pytest.approx(mean_loss, rel=1e-12)
    for name in a.parameter_names():
        np.testing.assert_allclose(b.get_grad(name), a.get_grad(name), rtol=1e-10, atol=1e-14)
    # the loss is sum_t w_t * CE_t of the per-token losses
    w = np.random.default_rng(7).normal(size=tokens.shape)
    ce = a.token_losses(tokens, targets).astype(np.float64)
    assert a.forward_backward(tokens, targets, weights=w) == pytest.approx(float((w * ce).sum()), rel=1e-6)
    # all-zero weights: zero loss and no gradient from the cross-entropy
    c = nw.Model(micro_config(balance_alpha=0.0), seed=1, dtype="float64")
    assert c.forward_backward(tokens, targets, weights=np.zeros(tokens.shape)) == 0.0
    assert all(not c.get_grad(name).any() for name in c.parameter_names())


def test_bad_weights_raise():
    cfg = micro_config()
    tokens, targets = random_batch(cfg, batch=2, seq=5)
    model = nw.Model(cfg, seed=0)
    with pytest.raises(ValueError, match="weights must have the shape of tokens"):
        model.forward_backward(tokens, targets, weights=np.ones((2, 4)))
    bad = np.ones(tokens.shape)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="loss weight nan at position 7 is not finite"):
        model.forward_backward(tokens, targets, weights=bad)
    with pytest.raises(ValueError, match="float array"):
        model.forward_backward(tokens, targets, weights=np.full(tokens.shape, "x"))
