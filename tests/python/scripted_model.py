"""A real model whose weights are set by hand so that its greedy continuation is a chosen text, repeated: the
serving tests need answers with characters split across tokens, which a trained micro model never writes."""

from __future__ import annotations

import numpy as np

SPLIT = "a\U0001F433 \u65e5\u00e9!"  # characters of 1, 4, 3 and 2 bytes: a small byte-level BPE splits the last three


def script_answer(model, tokenizer, after: list[int], text: str) -> list[int]:
    """Sets `model`'s weights so that, greedily, each token in `after` is followed by text's tokens, cycling.
    Every block adds nothing to the residual stream (its output projections are zero), so the logits of a
    position depend on its token alone: token j's embedding is the unit vector e_k (k its place in the
    script), and the head row of the token meant to follow it points along e_k. Returns text's token ids."""
    cycle = tokenizer.encode(text)
    follows = {t: cycle[0] for t in after} | {t: cycle[(i + 1) % len(cycle)] for i, t in enumerate(cycle)}
    keys = list(after) + cycle
    d = model.config.d_model
    assert len(set(keys)) == len(keys) <= d, "the script needs distinct tokens, at most d_model of them"
    for name in model.parameter_names():
        if name.endswith((".wo", ".w_out")):  # attention and (dense, routed, shared) expert outputs
            model.set_param(name, np.zeros_like(model.get_param(name)))
    embed, head = model.get_param("embed"), np.zeros_like(model.get_param("head"))
    for k, token in enumerate(keys):
        embed[token] = np.eye(d, dtype=np.float32)[k]
        head[follows[token], k] = 1.0
    model.set_param("embed", embed)
    model.set_param("head", head)
    model.set_param("final_norm", np.ones_like(model.get_param("final_norm")))
    return cycle
