"""Generation with the C++ KV cache on a trained micro checkpoint: cached decoding gives the same tokens as
full recomputation (greedy, exactly) and the same logits up to float32 rounding (the cached path multiplies
matrices of other shapes; tests/python/test_generate.py checks 1e-12 in float64); sampling is seeded."""

import numpy as np
import pytest

import nanowhale as nw
from nanowhale.generate import encode_prompt, sample
from train_fixtures import micro_run_config


@pytest.fixture(scope="module")
def run(micro_data, tmp_path_factory):
    data, vocab = micro_data
    d = tmp_path_factory.mktemp("gen") / "run"
    nw.train(micro_run_config(data, d, vocab, train={"steps": 6}), progress=False)
    return nw.load(d)


def _prompt(run, B=2, Tp=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, run.tokenizer.n_ordinary, size=(B, Tp)).astype(np.int32)


def test_cached_decode_logits_equal_full_recomputation(run):
    model = run.model
    prompt = _prompt(run, B=3, Tp=6)
    cache = model.new_kv_cache(3)
    seq = prompt
    got = model.decode(prompt, cache)
    assert cache.length == 6
    tol = 2e-5
    np.testing.assert_allclose(got, model.logits(prompt), rtol=tol, atol=tol)
    rng = np.random.default_rng(1)
    for _ in range(10):
        nxt = rng.integers(0, run.tokenizer.n_ordinary, size=(3, 1)).astype(np.int32)
        step = model.decode(nxt, cache)
        seq = np.concatenate([seq, nxt], axis=1)
        np.testing.assert_allclose(step[:, 0], model.logits(seq)[:, -1], rtol=tol, atol=tol)
    assert cache.length == seq.shape[1]
    cache.reset()
    assert cache.length == 0
    assert np.array_equal(model.decode(prompt, cache), got)


def test_greedy_generation_equals_argmax_of_full_recomputation(run):
    model = run.model
    prompt = _prompt(run, B=2, Tp=4)
    out = model.generate(prompt, 12, temperature=0.0)
    assert out.shape == (2, 16) and out.dtype == np.int32
    assert np.array_equal(out[:, :4], prompt)
    seq = prompt
    for _ in range(12):
        nxt = model.logits(seq)[:, -1].argmax(axis=-1).astype(np.int32)[:, None]
        seq = np.concatenate([seq, nxt], axis=1)
    assert np.array_equal(out, seq)
    assert np.array_equal(model.generate(prompt, 12, temperature=1.0, top_k=1, seed=5), seq)


def test_sampling_is_seeded(run):
    model = run.model
    prompt = _prompt(run, B=4, Tp=3)
    a = model.generate(prompt, 20, temperature=1.0, top_k=20, top_p=0.9, seed=7)
    b = model.generate(prompt, 20, temperature=1.0, top_k=20, top_p=0.9, seed=7)
    c = model.generate(prompt, 20, temperature=1.0, top_k=20, top_p=0.9, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() < run.model.config.vocab_size


def test_too_long_requests_are_errors(run):
    T = run.model.config.seq_len
    with pytest.raises(ValueError):
        run.model.generate(_prompt(run, B=1, Tp=4), T)


def test_text_sampling_helpers(run):
    texts = run.sample(["the whale", "def "], n=2, max_new_tokens=10, temperature=0.8, top_k=10, seed=0)
    assert len(texts) == 4
    assert texts[0].startswith("the whale") and texts[2].startswith("def ")
    assert texts == sample(run.model, run.tokenizer, ["the whale", "def "], 2, 10, 0.8, 10, 1.0, 0)
    # A prompt longer than the context is refused with a clear message; long requests are capped.
    ids = encode_prompt(run.tokenizer, "x")
    assert ids[0] == run.tokenizer.special_id("<|bos|>")
    with pytest.raises(ValueError, match="seq_len"):
        run.sample("whale " * 200, max_new_tokens=5)
    assert run.sample("the", max_new_tokens=10_000, temperature=0.0)
