"""The model side of evaluation: log-likelihoods of continuations through the C++ `token_losses`, and greedy
completions through the C++ generation.

For a context c (ids, <|bos|> first) and a continuation x, the sequence s = c + x runs as tokens s[:-1] with
targets s[1:]; the continuation's tokens are the targets at positions len(c) - 1 ... len(s) - 2, and every
other target is -1. So log p(x | c) = -sum(token_losses) over exactly x's tokens. Sequences are sorted by
length (longest first) and padded to the longest in each batch (padding comes after every real position, so
causal attention never sees it; its targets are -1). A sequence longer than seq_len + 1 loses context from the left;
a continuation longer than seq_len is scored in windows of seq_len tokens, each with the seq_len + 1 - n
tokens before it as context (as a rolling log-likelihood does).
"""

from __future__ import annotations

import numpy as np

from nanowhale.conversation import render_for_completion


def _rows(ids: list[int], start: int, T: int) -> list[tuple[np.ndarray, int]]:
    """Rows of at most T + 1 tokens that together predict ids[start:], each with as much context as fits:
    (row ids, index in the row of the first token it scores)."""
    rows = []
    for a in range(start, len(ids), T):
        b = min(a + T, len(ids))
        lo = max(0, b - T - 1)
        rows.append((np.asarray(ids[lo:b], dtype=np.int32), a - lo))
    return rows


def _batches(model, requests: list[tuple[list[int], list[int]]], batch_rows: int):
    """(owner (B,), tokens (B, L), targets (B, L)) batches covering every request's continuation tokens: rows
    sorted longest first (the model keeps its activation block from the first, largest batch), padded after
    the real positions with targets -1."""
    T = model.config.seq_len
    rows, owner = [], []
    for i, (ctx, cont) in enumerate(requests):
        if not ctx or not cont:
            raise ValueError(f"request {i}: the context and the continuation each need at least one token")
        for row in _rows(list(ctx) + list(cont), len(ctx), T):
            rows.append(row)
            owner.append(i)
    owner = np.asarray(owner)
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][0]), reverse=True)
    for lo in range(0, len(order), batch_rows):
        batch = order[lo: lo + batch_rows]
        L = max(len(rows[r][0]) for r in batch) - 1
        tokens = np.zeros((len(batch), L), dtype=np.int32)   # (B, L)
        targets = np.full((len(batch), L), -1, dtype=np.int32)
        for k, r in enumerate(batch):
            ids, first = rows[r]
            tokens[k, : len(ids) - 1] = ids[:-1]
            targets[k, first - 1: len(ids) - 1] = ids[first:]
        yield owner[batch], tokens, targets


def continuation_logprobs(model, requests: list[tuple[list[int], list[int]]], batch_rows: int = 16) -> np.ndarray:
    """(N,) float64: sum of log-probabilities of each continuation given its context (lists of token ids)."""
    out = np.zeros(len(requests), dtype=np.float64)
    for owner, tokens, targets in _batches(model, requests, batch_rows):
        np.add.at(out, owner, -model.token_losses(tokens, targets).sum(axis=1, dtype=np.float64))
    return out


def continuation_is_greedy(model, requests: list[tuple[list[int], list[int]]], batch_rows: int = 16) -> np.ndarray:
    """(N,) bool: whether every continuation token is the model's most likely next token (ties: the lowest
    id, as greedy generation picks), over the same rows as continuation_logprobs."""
    out = np.ones(len(requests), dtype=bool)
    # the logits are (B, L, V): fewer rows per forward keep them near 128 MiB
    rows = max(1, min(batch_rows, (1 << 25) // (model.config.seq_len * model.config.vocab_size)))
    for owner, tokens, targets in _batches(model, requests, rows):
        hit = (model.logits(tokens).argmax(axis=-1) == targets) | (targets < 0)   # (B, L)
        np.logical_and.at(out, owner, hit.all(axis=1))
    return out


class ModelScorer:
    """What a task runner needs from a language model (loglikelihoods, greedy, rolling, complete_all); tests
    substitute a stub with the methods a task kind uses.

    chat: generative prompts go to the model as a user turn (render_for_completion) and the answer ends at
    <|assistant_end|> — for post-trained checkpoints. Multiple-choice scoring is the same either way."""

    def __init__(self, model, tokenizer, batch_rows: int = 16, chat: bool = False):
        self.model, self.tokenizer, self.batch_rows, self.chat = model, tokenizer, batch_rows, chat
        self.bos = tokenizer.special_id("<|bos|>")

    def loglikelihoods(self, requests: list[tuple[str, str]]) -> np.ndarray:
        """(N,) log p(continuation | <|bos|> context), each text encoded on its own."""
        return continuation_logprobs(self.model, self._pairs(requests), self.batch_rows)

    def _pairs(self, requests: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        return [([self.bos] + self.tokenizer.encode(c), self.tokenizer.encode(x)) for c, x in requests]

    def greedy(self, requests: list[tuple[str, str]]) -> np.ndarray:
        """(N,) bool: whether greedy decoding after <|bos|> context yields exactly the continuation's tokens."""
        return continuation_is_greedy(self.model, self._pairs(requests), self.batch_rows)

    def rolling(self, texts: list[str]) -> list[dict]:
        """Each text scored whole as one document, as `nanowhale eval FILE` scores a file: [{'nats' (summed
        over its tokens), 'tokens', 'bytes'}] (no context but <|bos|>; windows of seq_len at stride seq_len)."""
        from nanowhale.evaluate import score_tokens

        out = []
        for ids in self.tokenizer.encode_batch(texts):
            r = score_tokens(self.model, self.tokenizer, np.asarray([self.bos] + ids, dtype=np.int32),
                             self.batch_rows)
            out.append({"nats": r["loss"] * r["tokens"], "tokens": r["tokens"], "bytes": r["bytes"]})
        return out

    def _prompt(self, prompt: str) -> tuple[list[int], list[int]]:
        """(prompt ids, stop tokens): <|bos|> prompt, or the prompt as a chat turn ending at <|assistant_end|>;
        a prompt of seq_len tokens or more keeps its last seq_len // 2 (the question's end, room to answer)."""
        stops = [self.bos]
        if self.chat:
            ids = render_for_completion(self.tokenizer, [{"role": "user", "content": prompt}]).tolist()
            stops.append(self.tokenizer.special_id("<|assistant_end|>"))
        else:
            ids = [self.bos] + self.tokenizer.encode(prompt)
        if len(ids) >= self.model.config.seq_len:
            ids = ids[-(self.model.config.seq_len // 2):]
        return ids, stops

    def complete(self, prompt: str, stop: tuple[str, ...], max_new_tokens: int) -> str:
        """The greedy continuation of <|bos|> prompt (or of the prompt as a chat turn), up to the first stop
        string or stop token."""
        return self.complete_all([prompt], [stop], [max_new_tokens])[0]

    def complete_all(self, prompts: list[str], stops: list[tuple[str, ...]], max_new_tokens: list[int]) -> list[str]:
        """complete() of every prompt, batch_rows at a time in the C++ ContinuousBatch (one forward per decode
        step for all of them, the GIL released), longest prompt first; a generation leaves the batch at its
        stop token, its token budget, or the first of its stop strings (the text is cut before it)."""
        from nanowhale._C import ContinuousBatch

        T = self.model.config.seq_len
        prompts_ids = [self._prompt(p) for p in prompts]
        waiting = sorted(range(len(prompts)), key=lambda i: len(prompts_ids[i][0]), reverse=True)[::-1]
        needles = [[x.encode("utf-8") for x in stop if x] for stop in stops]
        data = [b""] * len(prompts)   # the bytes generated so far, per prompt
        batch = ContinuousBatch(self.model, max(1, min(self.batch_rows, len(prompts))))
        running = {}  # generation id -> prompt index
        while waiting or running:
            while waiting and len(running) < batch.slots:
                i = waiting.pop()
                ids, stop_tokens = prompts_ids[i]
                new = min(max_new_tokens[i], T - len(ids))
                if new >= 1:
                    running[batch.add(np.asarray(ids, dtype=np.int32), new, temperature=0.0,
                                      stop_tokens=stop_tokens)] = i
            if not running:
                break
            gens, tokens, finished, stopped = batch.step()
            for gen, token, done, at_stop in zip(gens.tolist(), tokens.tolist(), finished.tolist(), stopped.tolist()):
                i = running[gen]
                if not at_stop:
                    piece = self.tokenizer.decode_bytes([int(token)])
                    data[i] += piece
                    # a stop string ends in the bytes just added, or not at all yet
                    tail = data[i][-(max((len(n) for n in needles[i]), default=0) + len(piece)):]
                    if not done and any(n in tail for n in needles[i]):
                        batch.cancel(gen)
                        done = True
                if done:
                    del running[gen]
        texts = []
        for raw, stop in zip(data, stops):
            text = raw.decode("utf-8", errors="replace")
            cut = min((k for k in (text.find(x) for x in stop if x) if k >= 0), default=len(text))
            texts.append(text[:cut])
        return texts


__all__ = ["ModelScorer", "continuation_is_greedy", "continuation_logprobs"]
