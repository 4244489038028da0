"""Incremental decoding with the C++ KV cache against full recomputation, and sampling."""

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config, random_batch


def trained_like(cfg, dtype="float32", seed=3):
    """A model with random (not zero-initialised) weights, so every path shapes the logits."""
    model = nw.Model(cfg, seed=0, dtype=dtype)
    rng = np.random.default_rng(seed)
    for name in model.parameter_names():
        shape = model.get_param(name).shape
        scalar = model.parameter_kind(name) == "scalar"
        model.set_param(name, rng.normal(1.0 if scalar else 0.0, 0.3, size=shape))
    return model


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 2e-5)])
def test_cached_logits_match_full_recomputation(dtype, tol):
    cfg = micro_config()  # sliding-window and full layers, GQA, MoE with shared expert
    model = trained_like(cfg, dtype)
    tokens, _ = random_batch(cfg, batch=2, seq=12, seed=4)
    full = model.logits(tokens)
    cache = model.new_kv_cache(batch=2)
    pieces = [model.decode(tokens[:, :5], cache)]
    for t in range(5, 12):
        pieces.append(model.decode(tokens[:, t:t + 1], cache))
    assert cache.length == 12
    cached = np.concatenate(pieces, axis=1)
    np.testing.assert_allclose(cached, full, rtol=tol, atol=tol)
    cache.reset()
    assert cache.length == 0
    np.testing.assert_allclose(model.decode(tokens, cache), full, rtol=tol, atol=tol)


def test_greedy_generation_matches_uncached_argmax():
    cfg = micro_config()
    model = trained_like(cfg)
    prompt, _ = random_batch(cfg, batch=3, seq=4, seed=5)
    out = model.generate(prompt, max_new_tokens=10, temperature=0.0)
    assert out.shape == (3, 14) and out.dtype == np.int32
    np.testing.assert_array_equal(out[:, :4], prompt)
    seq = prompt.copy()
    for _ in range(10):  # recompute everything from scratch at every step
        nxt = model.logits(seq)[:, -1].argmax(-1)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)


def test_sampling_is_seeded_and_filters_work():
    cfg = micro_config()
    model = trained_like(cfg)
    prompt, _ = random_batch(cfg, batch=2, seq=3, seed=6)
    a = model.generate(prompt, 10, temperature=1.0, seed=1)
    b = model.generate(prompt, 10, temperature=1.0, seed=1)
    c = model.generate(prompt, 10, temperature=1.0, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    greedy = model.generate(prompt, 10, temperature=0.0)
    np.testing.assert_array_equal(model.generate(prompt, 10, temperature=1.0, top_k=1, seed=9), greedy)
    np.testing.assert_array_equal(model.generate(prompt, 10, temperature=1.0, top_p=1e-6, seed=9), greedy)
    # top_k = 3 only ever picks one of the three most likely tokens
    out = model.generate(prompt, 1, temperature=5.0, top_k=3, seed=11)
    top3 = np.argsort(-model.logits(prompt)[:, -1], axis=-1)[:, :3]
    assert all(out[b, -1] in top3[b] for b in range(2))


def test_stop_token_ends_generation_early():
    cfg = micro_config()
    model = trained_like(cfg)
    prompt, _ = random_batch(cfg, batch=1, seq=3, seed=7)
    greedy = model.generate(prompt, 8, temperature=0.0)
    stop = int(greedy[0, 5])
    first = int(np.argmax(greedy[0, 3:] == stop)) + 3  # where the stop token first appears
    out = model.generate(prompt, 8, temperature=0.0, stop_token=stop)
    assert out.shape[1] == first + 1
    np.testing.assert_array_equal(out, greedy[:, :first + 1])


def test_generation_errors():
    cfg = micro_config()
    model = trained_like(cfg)
    prompt, _ = random_batch(cfg, batch=2, seq=4, seed=8)
    with pytest.raises(ValueError, match="seq_len"):
        model.generate(prompt, cfg.seq_len)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(prompt, 2, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 2, temperature=-1.0)
    cache = model.new_kv_cache(batch=1)
    with pytest.raises(ValueError, match="holds 1 sequences"):
        model.decode(prompt, cache)
    other = nw.Model(micro_config(n_layer=2), seed=0)
    with pytest.raises(ValueError, match="another shape"):
        model.decode(prompt[:1], other.new_kv_cache(batch=1))
    full = model.new_kv_cache(batch=2)
    model.decode(np.zeros((2, cfg.seq_len), dtype=np.int64), full)
    with pytest.raises(ValueError, match="exceed seq_len"):
        model.decode(prompt[:, :1], full)


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_streamed_generation_equals_generate(chunk):
    cfg = micro_config()
    model = trained_like(cfg)
    prompt, _ = random_batch(cfg, batch=2, seq=4, seed=8)
    whole = model.generate(prompt, 9, temperature=1.0, top_k=5, seed=3)
    gen = model.start_generation(prompt, 9, temperature=1.0, top_k=5, seed=3)
    pieces = []
    while not gen.done:
        piece = gen.step(chunk)
        assert 1 <= piece.shape[1] <= chunk and piece.shape[0] == 2
        pieces.append(piece)
    assert gen.step(chunk).shape == (2, 0) and gen.produced == 9
    np.testing.assert_array_equal(np.concatenate([prompt] + pieces, axis=1), whole)


def test_streamed_generation_stops_per_row_on_any_stop_token():
    cfg = micro_config()
    model = trained_like(cfg)
    prompt, _ = random_batch(cfg, batch=1, seq=3, seed=7)
    greedy = model.generate(prompt, 8, temperature=0.0)[0, 3:]
    stops = [int(greedy[4]), int(greedy[2])]  # the earlier one (index 2) ends it
    first = min(int(np.argmax(greedy == s)) for s in stops)
    gen = model.start_generation(prompt, 8, temperature=0.0, stop_tokens=stops)
    out = np.concatenate([gen.step(1) for _ in range(8)], axis=1)[0]
    assert gen.done and gen.stopped == [True]
    np.testing.assert_array_equal(out, greedy[:first + 1])
    with pytest.raises(ValueError, match="stop token"):
        model.start_generation(prompt, 8, stop_tokens=[cfg.vocab_size])
    with pytest.raises(ValueError, match="seq_len"):
        model.start_generation(prompt, cfg.seq_len)


def test_concurrent_generations_on_one_model_match_sequential():
    import threading

    cfg = micro_config()
    model = trained_like(cfg)
    prompts = [random_batch(cfg, batch=1, seq=3, seed=s)[0] for s in range(4)]
    want = [model.generate(p, 10, temperature=1.0, seed=i) for i, p in enumerate(prompts)]
    got = [None] * 4

    def run(i):
        gen = model.start_generation(prompts[i], 10, temperature=1.0, seed=i)
        got[i] = np.concatenate([prompts[i]] + [gen.step(1) for _ in range(10)], axis=1)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)
