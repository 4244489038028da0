"""Training behaviour: overfitting one batch, determinism, the balance-bias rule, gradient accumulation."""

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config, random_batch


def small_config(**overrides):
    base = dict(vocab_size=512, seq_len=64, d_model=64, n_layer=3, n_head=4, n_kv_head=2, head_dim=16,
                n_dense_layers=1, dense_hidden=128, n_experts=8, top_k=2, expert_hidden=64, n_shared=1,
                shared_hidden=64)
    base.update(overrides)
    return nw.ModelConfig(**base)


def train(cfg, tokens, targets, steps, seed=0, threads=None, precision="fp32"):
    if threads is not None:
        nw.set_num_threads(threads)
    model = nw.Model(cfg, seed=seed)
    model.precision = precision
    opt = nw.Optimizer(model)
    losses = []
    for _ in range(steps):
        losses.append(model.forward_backward(tokens, targets))
        opt.step()
        model.zero_grad()
    return model, losses


def test_tiny_model_overfits_one_batch():
    cfg = small_config()
    tokens, targets = random_batch(cfg, batch=4, seq=64, seed=0)
    _, losses = train(cfg, tokens, targets, steps=40)
    assert losses[0] > 5.0
    assert losses[-1] < 0.1, losses[-5:]


def test_same_seed_same_loss_bits():
    cfg = small_config()
    tokens, targets = random_batch(cfg, batch=2, seq=64, seed=1)
    _, a = train(cfg, tokens, targets, steps=4)
    _, b = train(cfg, tokens, targets, steps=4)
    assert a == b
    _, c = train(cfg, tokens, targets, steps=4, seed=1)
    assert a != c


def test_bf16_precision_is_deterministic_rounded_and_close_to_fp32():
    cfg = small_config()
    tokens, targets = random_batch(cfg, batch=2, seq=64, seed=1)
    assert nw.Model(cfg).precision == "fp32"  # the reference mode is the default
    m1, a = train(cfg, tokens, targets, steps=6, precision="bf16")
    m2, b = train(cfg, tokens, targets, steps=6, precision="bf16")
    assert m1.precision == "bf16"
    assert a == b  # bit-identical
    for name in m1.parameter_names():
        assert np.array_equal(m1.get_param(name), m2.get_param(name)), name
    _, ref = train(cfg, tokens, targets, steps=6)
    assert a[0] != ref[0]  # the matmul operands are rounded from the first step on
    # bf16 operands (8 significant bits) move each loss by well under 1% at this size.
    np.testing.assert_allclose(a, ref, rtol=1e-2)


def test_muon_orthogonalises_in_the_models_precision_at_each_step():
    """Same gradients (computed in fp32), then one step with the model switched to bf16 in between: only
    the Muon matrices move differently, by bf16's error in Newton-Schulz (within 20u of the update, as
    in test_optimizer_math.cpp); AdamW's parameters and Muon's float32 momentum are unchanged."""
    cfg = small_config()
    tokens, targets = random_batch(cfg, batch=2, seq=64, seed=1)
    models = [nw.Model(cfg, seed=0) for _ in range(2)]
    opts = [nw.Optimizer(m) for m in models]
    # A first fp32 step moves the zero-initialised output projections: at the second every matrix has a gradient.
    for model, opt in zip(models, opts):
        model.forward_backward(tokens, targets)
        opt.step()
        model.zero_grad()
        model.forward_backward(tokens, targets)
    start = {n: models[0].get_param(n) for n in models[0].parameter_names()}
    models[1].precision = "bf16"
    for opt in opts:
        opt.step()
    matrices = [n for n in start if models[0].parameter_kind(n) == "matrix"]
    assert len(matrices) > 10
    for name in start:
        assert np.array_equal(opts[0].get_state("exp_avg", name), opts[1].get_state("exp_avg", name)), name
        fp32, bf16 = models[0].get_param(name), models[1].get_param(name)
        if name not in matrices:
            assert np.array_equal(fp32, bf16), name
            continue
        upd_fp32, upd_bf16 = fp32 - start[name], bf16 - start[name]
        rel = np.linalg.norm(upd_bf16 - upd_fp32) / np.linalg.norm(upd_fp32)
        assert 1e-4 < rel <= 20 / 256, (name, rel)


def test_bf16_precision_rejects_bad_names_and_float64():
    model = nw.Model(small_config())
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        model.precision = "fp16"
    with pytest.raises(ValueError, match="bf16 needs a float32 model"):
        nw.Model(small_config(), dtype="float64").precision = "bf16"


def test_thread_count_does_not_change_loss_bits():
    cfg = small_config()
    tokens, targets = random_batch(cfg, batch=4, seq=64, seed=2)
    before = nw.get_num_threads()
    try:
        m1, one = train(cfg, tokens, targets, steps=4, threads=1)
        m2, two = train(cfg, tokens, targets, steps=4, threads=2)
    finally:
        nw.set_num_threads(before)
    assert one == two
    for name in m1.parameter_names():
        assert np.array_equal(m1.get_param(name), m2.get_param(name)), name


def test_balance_bias_changes_only_by_the_update_rule():
    cfg = small_config(balance_gamma=0.01)
    tokens, targets = random_batch(cfg, batch=2, seq=64, seed=3)
    model = nw.Model(cfg, seed=0)
    opt = nw.Optimizer(model)
    names = model.buffer_names()
    start = {n: model.get_buffer(n) for n in names}
    # Evaluation does not count tokens and gradients do not touch the bias.
    model.forward(tokens, targets)
    model.forward_backward(tokens, targets)
    model.forward_backward(tokens, targets)  # two micro-batches accumulate
    for n in names:
        assert np.array_equal(model.get_buffer(n), start[n])
    counts = {s["layer"]: np.array(s["tokens_per_expert"]) for s in model.routing_stats()}
    assert all(c.sum() == 2 * 2 * 64 * cfg.top_k for c in counts.values())
    opt.step()
    for n, stats in zip(names, model.routing_stats()):
        c = counts[stats["layer"]]
        expected = start[n] + np.float32(0.01) * np.sign(c.mean() - c).astype(np.float32)
        np.testing.assert_array_equal(model.get_buffer(n), expected.astype(np.float32))
        assert stats["tokens_per_expert"] == list(c)  # the step's counts stay readable


def test_balance_gamma_zero_freezes_the_bias():
    cfg = small_config()
    tokens, targets = random_batch(cfg, batch=2, seq=64, seed=4)
    model = nw.Model(cfg, seed=0)
    opt = nw.Optimizer(model)
    model.forward_backward(tokens, targets)
    opt.step(balance_gamma=0.0)
    for n in model.buffer_names():
        assert not model.get_buffer(n).any()


def test_gradient_accumulation_matches_one_big_batch():
    cfg = micro_config()
    tokens, targets = random_batch(cfg, batch=4, seq=8, seed=5)
    whole = nw.Model(cfg, seed=0, dtype="float64")
    parts = nw.Model(cfg, seed=0, dtype="float64")
    whole.forward_backward(tokens, targets)
    for i in range(2):
        parts.forward_backward(tokens[2 * i:2 * i + 2], targets[2 * i:2 * i + 2], grad_scale=0.5)
    for name in whole.parameter_names():
        np.testing.assert_allclose(parts.get_grad(name), whole.get_grad(name), rtol=1e-9, atol=1e-12)


def micro_batches(cfg):
    """Three (tokens, targets, weights) micro-batches: plain, with ignored targets, weighted (both signs)."""
    plain = random_batch(cfg, 2, 16, seed=4)
    masked = random_batch(cfg, 2, 16, seed=5, ignore_fraction=0.3)
    weights = np.random.default_rng(6).normal(0, 0.1, size=(2, 16))
    return [(*plain, None), (*masked, None), (*random_batch(cfg, 2, 16, seed=7, ignore_fraction=0.2), weights)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_deferred_loss_sums_are_the_returned_losses_summed(precision):
    cfg = micro_config()
    returned, deferred = nw.Model(cfg, seed=3), nw.Model(cfg, seed=3)
    returned.precision = deferred.precision = precision
    loss_sum = balance_sum = 0.0
    for tokens, targets, weights in micro_batches(cfg):
        loss_sum += returned.forward_backward(tokens, targets, weights=weights, grad_scale=0.5)
        balance_sum += returned.last_balance_loss
        assert deferred.forward_backward(tokens, targets, weights=weights, grad_scale=0.5, defer_loss=True) is None
    assert balance_sum > 0
    assert deferred.take_loss_sums() == (loss_sum, balance_sum)  # the same bits: summed in the same order
    for name in returned.parameter_names():
        assert np.array_equal(deferred.get_grad(name), returned.get_grad(name)), name
    assert deferred.take_loss_sums() == (0.0, 0.0)  # taking zeroes the sums


def test_deferred_loss_errors():
    cfg = micro_config()
    model = nw.Model(cfg)
    tokens, targets = random_batch(cfg, 2, 16, seed=8)
    model.forward_backward(tokens, targets, defer_loss=True)
    assert np.isnan(model.last_balance_loss)  # nothing was read
    with pytest.raises(ValueError, match="take_loss_sums"):
        model.forward_backward(tokens, targets)  # would mix its loss with the waiting sums
    with pytest.raises(ValueError, match="weights must have the shape"):
        model.forward_backward(tokens, targets, weights=np.ones((2, 3)), defer_loss=True)
    with pytest.raises(ValueError, match="not finite"):
        model.forward_backward(tokens, targets, weights=np.full((2, 16), np.nan), defer_loss=True)
    loss, balance = model.take_loss_sums()  # the rejected calls added nothing
    reference = nw.Model(cfg)
    assert loss == reference.forward_backward(tokens, targets)
    assert balance == reference.last_balance_loss
    assert model.forward_backward(tokens, targets) == loss  # returning calls work again once taken


def test_clipping_and_learning_rate_multiplier():
    cfg = micro_config()
    tokens, targets = random_batch(cfg, batch=2, seq=8, seed=6)
    model = nw.Model(cfg, seed=0)
    before = {n: model.get_param(n) for n in model.parameter_names()}
    model.forward_backward(tokens, targets)
    opt = nw.Optimizer(model)
    norm = opt.step(lr_mult=0.0)
    assert norm > 0 and np.isfinite(norm)
    for n in model.parameter_names():  # lr 0 and no weight decay: nothing moves
        np.testing.assert_array_equal(model.get_param(n), before[n])
    assert opt.steps == 1


def test_first_step_optimizer_state_by_hand():
    """After one step (no clipping): AdamW m = (1-b1) g, v = (1-b2) g^2; Muon momentum = g."""
    cfg = micro_config()
    tokens, targets = random_batch(cfg, batch=2, seq=8, seed=7)
    model = nw.Model(cfg, seed=0, dtype="float64")
    conf = nw.OptimizerConfig()
    conf.grad_clip = 0.0
    opt = nw.Optimizer(model, conf)
    model.forward_backward(tokens, targets)
    grads = {n: model.get_grad(n) for n in model.parameter_names()}
    opt.step()
    for name, g in grads.items():
        m, v = opt.get_state("exp_avg", name), opt.get_state("exp_avg_sq", name)
        kind = model.parameter_kind(name)
        if kind == "matrix":
            np.testing.assert_allclose(m, g, rtol=1e-12)
            assert not v.any()
        else:
            group = {"embedding": conf.embed, "head": conf.head, "router": conf.router, "scalar": conf.scalar}[kind]
            np.testing.assert_allclose(m, (1 - group.beta1) * g, rtol=1e-6, atol=1e-300)
            np.testing.assert_allclose(v, (1 - group.beta2) * g * g, rtol=1e-6, atol=1e-300)
    # state round-trips (checkpoints restore it)
    value = np.ones_like(opt.get_state("exp_avg", "embed"))
    opt.set_state("exp_avg", "embed", value)
    np.testing.assert_array_equal(opt.get_state("exp_avg", "embed"), value)
    opt.steps = 7
    assert opt.steps == 7
