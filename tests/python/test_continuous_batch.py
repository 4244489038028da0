"""The C++ ContinuousBatch (the server's batching engine): every generation gives the tokens it gives alone
(greedy and seeded sampling, each with its own settings), whatever joins or leaves beside it; one forward per
decode step for all; slots are freed by finishing or cancelling; bad arguments are ValueErrors."""

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config
from test_generate import trained_like

SETTINGS = [dict(temperature=0.0), dict(temperature=1.0, seed=5), dict(temperature=0.7, top_k=5, seed=2**64 - 1),
            dict(temperature=1.3, top_p=0.8, seed=9), dict(temperature=0.0), dict(temperature=1.0, top_k=3, seed=1)]


@pytest.fixture(scope="module")
def model():
    # seq_len 32 with a sliding window of 3: prompts and generations cross the window in both layer kinds
    return trained_like(micro_config(seq_len=32))


def prompts(cfg, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, cfg.vocab_size, size=int(rng.integers(1, 12))).astype(np.int32) for _ in range(n)]


def alone(model, prompt, n, stop_tokens=(), **kw):
    gen = model.start_generation(prompt[None], n, stop_tokens=list(stop_tokens), **kw)
    return gen.step(n)[0].tolist()


def run_all(batch, queued):
    """Adds `queued` [(prompt, n, kwargs)] whenever a slot is free, steps until all are done; tokens per item."""
    out, ids, pending = {}, {}, list(enumerate(queued))
    while pending or batch.active:
        while pending and batch.active < batch.slots:
            i, (prompt, n, kw) = pending.pop(0)
            ids[batch.add(prompt, n, **kw)] = i
            out[i] = []
        gids, tokens, finished, _ = batch.step()
        assert len(gids) == len(set(gids.tolist()))  # one token per running generation per step
        for g, t in zip(gids.tolist(), tokens.tolist()):
            out[ids[g]].append(t)
    return [out[i] for i in range(len(queued))]


def test_each_generation_equals_its_generation_alone(model):
    cfg = model.config
    items = [(p, 32 - len(p) - i % 3, SETTINGS[i % len(SETTINGS)]) for i, p in enumerate(prompts(cfg, 12))]
    batch = nw._C.ContinuousBatch(model, 4)  # 12 generations through 4 slots: they join and leave mid-way
    got = run_all(batch, items)
    for (prompt, n, kw), tokens in zip(items, got):
        assert tokens == alone(model, prompt, n, **kw)
    assert batch.prefills == 12 and batch.active == 0


def test_stop_tokens_end_a_generation_and_free_its_slot(model):
    cfg = model.config
    (p,) = prompts(cfg, 1, seed=3)
    free = alone(model, p, 12, temperature=0.0)
    stop = free[4]
    batch = nw._C.ContinuousBatch(model, 1)
    got = run_all(batch, [(p, 12, dict(temperature=0.0, stop_tokens=[stop]))] * 2)
    assert got == [free[: free.index(stop) + 1]] * 2


def test_one_forward_per_step_for_all_generations(model):
    cfg = model.config
    items = [(p, 10, dict(temperature=0.0)) for p in prompts(cfg, 6, seed=1)]
    batch = nw._C.ContinuousBatch(model, 6)
    run_all(batch, items)
    assert batch.decode_steps == 9  # 10 tokens each: 9 batched forwards, not 6 x 9
    one = nw._C.ContinuousBatch(model, 1)
    run_all(one, items)
    assert one.decode_steps == 6 * 9


def test_cancel_frees_the_slot(model):
    (p,) = prompts(model.config, 1, seed=2)
    batch = nw._C.ContinuousBatch(model, 1)
    first = batch.add(p, 10, temperature=0.0)
    batch.step()
    with pytest.raises(ValueError, match="all 1 slots are taken"):
        batch.add(p, 10, temperature=0.0)
    batch.cancel(first)
    batch.cancel(first)  # twice, or an unknown id: nothing happens
    assert batch.active == 0
    second = batch.add(p, 3, temperature=0.0)
    assert second != first
    tokens = [batch.step()[1][0] for _ in range(3)]
    assert tokens == alone(model, p, 3, temperature=0.0) and batch.active == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
    (dict(max_new_tokens=40), r"exceed seq_len 32"),
    (dict(max_new_tokens=2**40), "max_new_tokens must be in"),
    (dict(seed=2**80), r"seed must be in \[0, 2\^64 - 1\]"),
    (dict(temperature=float("nan")), "temperature must be finite"),
    (dict(top_k=-1), "top_k must be in"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(stop_tokens=[37]), "stop token 37 is outside the vocabulary"),
    (dict(prompt=np.array([], np.int32)), "at least one token"),
    (dict(prompt=np.array([99], np.int32)), "prompt token 99 is outside the vocabulary"),
    (dict(prompt=np.zeros((1, 2), np.int32)), "prompt must have 1 dimensions"),
])
def test_bad_arguments_are_value_errors(model, kwargs, message):
    batch = nw._C.ContinuousBatch(model, 2)
    args = dict(prompt=np.array([1, 2], np.int32), max_new_tokens=4) | kwargs
    with pytest.raises(ValueError, match=message):
        batch.add(**args)
    assert batch.active == 0
    with pytest.raises(ValueError, match="slots must be in"):
        nw._C.ContinuousBatch(model, 0)
