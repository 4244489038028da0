"""Assistant completions from the engine's batched KV-cache sampler (Model.generate, C++), cut at <|assistant_end|>."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nanowhale.conversation import render_for_completion
from nanowhale.generate import generate_ids


@dataclass
class Completions:
    """n completions of one prompt: `tokens[i]` ends with <|assistant_end|> unless `truncated[i]` (hit the
    length limit first); `texts[i]` is the decoded completion without the end token."""

    prompt: np.ndarray          # (Tp,) int32
    tokens: list[np.ndarray]    # n arrays of int32
    truncated: np.ndarray       # (n,) bool
    texts: list[str]


def complete(model, tok, prompt: np.ndarray, n: int, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, seed: int = 0) -> Completions:
    """n sampled completions of one rendered prompt, generated as one batch of n rows (the group)."""
    end = tok.special_id("<|assistant_end|>")
    rows = generate_ids(model, prompt, n, max_new_tokens, temperature, top_k, 1.0, seed, stop_token=end)
    gen = rows[:, len(prompt):]                              # (n, new)
    is_end = gen == end
    has_end = is_end.any(axis=1)
    length = np.where(has_end, is_end.argmax(axis=1) + 1, gen.shape[1])
    tokens = [gen[i, :length[i]].copy() for i in range(n)]
    texts = [tok.decode(t[:-1].tolist() if has_end[i] else t.tolist()) for i, t in enumerate(tokens)]
    return Completions(np.asarray(prompt, np.int32), tokens, ~has_end, texts)


def answer(model, tok, messages: list[dict], max_new_tokens: int = 64) -> str:
    """The greedy assistant reply to a conversation ending with a user turn (for samples in logs and notes)."""
    return complete(model, tok, render_for_completion(tok, messages), 1, max_new_tokens, temperature=0.0).texts[0]


def completion_prompt(conv: list[dict]) -> list[dict]:
    """A conversation without its final assistant turn: what the model is asked to continue."""
    return conv[:-1] if conv[-1]["role"] == "assistant" else conv


def sample_replies(model, tok, convs: list, n: int, max_new_tokens: int = 48) -> list[dict]:
    """Greedy replies to the first n conversations whose prompt leaves room for a reply."""
    out = []
    T = model.config.seq_len
    for c in convs:
        if len(out) == n:
            break
        prompt = completion_prompt(c)
        if len(render_for_completion(tok, prompt)) + 8 <= T:
            out.append({"prompt": prompt[-1]["content"], "reply": answer(model, tok, prompt, max_new_tokens)})
    return out


__all__ = ["Completions", "answer", "complete", "completion_prompt", "sample_replies"]
