"""The model side of evaluation: log-likelihoods of continuations through the C++ `token_losses`, and greedy
completions through the C++ generation.

For a context c (ids, <|bos|> first) and a continuation x, the sequence s = c + x runs as tokens s[:-1] with
targets s[1:]; the continuation's tokens are the targets at positions len(c) - 1 ... len(s) - 2, and every
other target is -1. So log p(x | c) = -sum(token_losses) over exactly x's tokens. Sequences are sorted by
length and padded to the longest in each batch (padding comes after every real position, so causal
attention never sees it; its targets are -1). A sequence longer than seq_len + 1 loses context from the left.
"""

from __future__ import annotations

import numpy as np

from nanowhale.generate import stream_text


def continuation_logprobs(model, requests: list[tuple[list[int], list[int]]], batch_rows: int = 16) -> np.ndarray:
    """(N,) float64: sum of log-probabilities of each continuation given its context (lists of token ids)."""
    T = model.config.seq_len
    seqs = []
    for i, (ctx, cont) in enumerate(requests):
        if not ctx or not cont:
            raise ValueError(f"request {i}: the context and the continuation each need at least one token")
        if len(cont) > T:
            raise ValueError(f"request {i}: the continuation has {len(cont)} tokens; the model's seq_len is {T}")
        ids = (list(ctx) + list(cont))[-(T + 1):]
        seqs.append((np.asarray(ids, dtype=np.int32), len(ids) - len(cont)))
    out = np.zeros(len(seqs), dtype=np.float64)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    for lo in range(0, len(order), batch_rows):
        rows = order[lo: lo + batch_rows]
        L = max(len(seqs[i][0]) for i in rows) - 1
        tokens = np.zeros((len(rows), L), dtype=np.int32)   # (B, L)
        targets = np.full((len(rows), L), -1, dtype=np.int32)
        for r, i in enumerate(rows):
            ids, start = seqs[i]
            tokens[r, : len(ids) - 1] = ids[:-1]
            targets[r, start - 1: len(ids) - 1] = ids[start:]
        out[rows] = -model.token_losses(tokens, targets).sum(axis=1, dtype=np.float64)
    return out


class ModelScorer:
    """What a task runner needs from a language model; tests substitute a stub with the same two methods."""

    def __init__(self, model, tokenizer, batch_rows: int = 16):
        self.model, self.tokenizer, self.batch_rows = model, tokenizer, batch_rows
        self.bos = tokenizer.special_id("<|bos|>")

    def loglikelihoods(self, requests: list[tuple[str, str]]) -> np.ndarray:
        """(N,) log p(continuation | <|bos|> context), each text encoded on its own."""
        pairs = [([self.bos] + self.tokenizer.encode(c), self.tokenizer.encode(x)) for c, x in requests]
        return continuation_logprobs(self.model, pairs, self.batch_rows)

    def complete(self, prompt: str, stop: tuple[str, ...], max_new_tokens: int) -> str:
        """The greedy continuation of <|bos|> prompt, up to the first stop string or <|bos|>."""
        ids = [self.bos] + self.tokenizer.encode(prompt)
        if len(ids) >= self.model.config.seq_len:
            ids = ids[-(self.model.config.seq_len // 2):]  # keep the question's end, leave room to answer
        return "".join(d.text for d in stream_text(self.model, self.tokenizer, ids, max_new_tokens, temperature=0.0,
                                                   stop_tokens=[self.bos], stop=stop, chunk=16))


__all__ = ["ModelScorer", "continuation_logprobs"]
