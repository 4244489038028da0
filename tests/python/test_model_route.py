"""Model.route: the experts each token goes to and the router scores, as training selects them."""

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config, random_batch


def test_route_selects_the_top_k_of_scores_plus_bias_like_training():
    cfg = micro_config()
    model = nw.Model(cfg, seed=3)
    rng = np.random.default_rng(0)
    for name in model.buffer_names():  # non-zero biases, so selection by scores + bias differs from scores alone
        model.set_buffer(name, rng.normal(0, 0.05, cfg.n_experts).astype(np.float32))
    tokens, targets = random_batch(cfg, 3, 8)
    experts, scores = model.route(tokens)
    M = cfg.n_layer - cfg.n_dense_layers
    assert experts.shape == (M, 3, 8, cfg.top_k) and experts.dtype == np.int32
    assert scores.shape == (M, 3, 8, cfg.n_experts) and scores.dtype == np.float32
    assert np.all((scores > 0) & (scores < 1))
    for m, name in enumerate(model.buffer_names()):
        biased = scores[m] + model.get_buffer(name)
        want = np.argsort(-biased, axis=-1, kind="stable")[..., : cfg.top_k]  # ties to the lowest index
        np.testing.assert_array_equal(experts[m], want)
    # routing takes no counts; the counts a training forward takes are those of the same selection
    assert all(sum(s["tokens_per_expert"]) == 0 for s in model.routing_stats())
    model.forward_backward(tokens, targets)
    for m, s in enumerate(model.routing_stats()):
        np.testing.assert_array_equal(s["tokens_per_expert"], np.bincount(experts[m].ravel(), minlength=cfg.n_experts))


def test_route_after_other_batch_shapes_is_the_same():
    cfg = micro_config()
    model = nw.Model(cfg, seed=1)
    tokens, _ = random_batch(cfg, 3, 8)
    want = model.route(tokens)
    model.route(tokens[:1, :5])               # a smaller batch, then a longer one: the activations are reused
    model.logits(np.tile(tokens, (2, 2)))
    for got, ref in zip(model.route(tokens), want):
        np.testing.assert_array_equal(got, ref)


def test_route_follows_a_dominant_bias_and_checks_its_input():
    cfg = micro_config()
    model = nw.Model(cfg, seed=0)
    bias = np.zeros(cfg.n_experts, dtype=np.float32)
    bias[2] = 10.0
    model.set_buffer(model.buffer_names()[0], bias)
    experts, _ = model.route(np.arange(8).reshape(1, 8))
    assert np.all(experts[0, ..., 0] == 2)          # first choice of the first MoE layer
    assert not np.all(experts[1, ..., 0] == 2)      # the second layer's bias is still zero
    with pytest.raises(ValueError, match="token"):
        model.route(np.full((1, 4), cfg.vocab_size))
    with pytest.raises(ValueError):
        model.route(np.zeros((1, cfg.seq_len + 1), dtype=np.int64))
