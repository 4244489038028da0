"""val_bpb (DESIGN.md §7): the protected evaluation metric.

    val_bpb = sum(nats over target tokens) / (ln 2 * sum(raw UTF-8 bytes of target tokens))

over the first `tokens // T` rows of the sequential validation stream (row g = tokens [g*T, g*T + T + 1)),
so the evaluated positions depend neither on the batch size nor on anything else but T and the shards.
Targets that are special tokens (byte length 0: <|bos|>, chat tokens) are excluded from both sums. Sums
are float64. Text files (`nanowhale eval --ckpt RUN a.txt b.txt`) are scored whole, each as one document. The research harness records a checksum of this file: change it only on purpose.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nanowhale.data.shards import Loader


def _loader(paths: list[str], B: int, T: int, bos_id: int, vocab_size: int) -> Loader:
    return Loader(paths, B, T, bos_id=bos_id, vocab_size=vocab_size, packed=False, seed=0)


class _Sums:
    """Float64 sums of nats, target bytes and counted targets over rows of T' + 1 tokens."""

    def __init__(self, model, byte_len: np.ndarray):
        self.model, self.byte_len = model, byte_len
        self.nats, self.bytes, self.tokens = 0.0, 0, 0

    def add(self, rows: np.ndarray) -> None:
        x, y = rows[:, :-1], rows[:, 1:].copy()
        b = self.byte_len[y]
        y[b == 0] = -1  # special tokens: no loss, no bytes
        self.nats += float(self.model.token_losses(x, y).sum(dtype=np.float64))
        self.bytes += int(b.sum())
        self.tokens += int((b > 0).sum())

    def bpb(self) -> float:
        return self.nats / (math.log(2) * self.bytes)


def val_bpb(model, tokenizer, shard_paths: list[str], tokens: int, batch_size: int = 16) -> dict:
    """{'val_bpb', 'val_loss' (nats per counted token), 'tokens' (counted targets), 'bytes', 'rows'}."""
    T = model.config.seq_len
    bos = tokenizer.special_id("<|bos|>")
    byte_len = tokenizer.token_byte_lengths().astype(np.int64)
    total = _loader(shard_paths, 1, T, bos, tokenizer.vocab_size).total_tokens
    n_rows = min(tokens // T, (total - 1) // T)  # full rows; independent of the batch size
    if n_rows < 1:
        raise ValueError(f"validation data has {total} tokens, fewer than one row of {T + 1}")
    B = min(batch_size, n_rows)
    sums = _Sums(model, byte_len)
    add = sums.add

    loader = _loader(shard_paths, B, T, bos, tokenizer.vocab_size)
    done = 0
    while done < n_rows:
        batch = loader.next()
        if batch is None:
            break  # the loader drops a last partial batch; the rows left are read one by one below
        batch = batch[: n_rows - done]
        add(batch)
        done += batch.shape[0]
    if done < n_rows:
        tail = _loader(shard_paths, 1, T, bos, tokenizer.vocab_size)
        for _ in range(done):
            tail.next()
        rows = [tail.next() for _ in range(n_rows - done)]
        add(np.concatenate(rows))
    if sums.bytes == 0:
        raise ValueError("validation targets contain no ordinary tokens")
    return {"val_bpb": sums.bpb(), "val_loss": sums.nats / sums.tokens, "tokens": sums.tokens, "bytes": sums.bytes,
            "rows": n_rows}


def score_tokens(model, tokenizer, ids: np.ndarray, batch_size: int = 16) -> dict:
    """Bits per byte of one whole token stream (a document: <|bos|> first): rows of T + 1 tokens at stride T,
    as val_bpb reads shards, then one shorter row for the targets left over, so every target is scored once.
    {'bpb', 'loss' (nats per counted token), 'tokens' (counted targets), 'bytes'}."""
    T = model.config.seq_len
    ids = np.asarray(ids, dtype=np.int32)
    sums = _Sums(model, tokenizer.token_byte_lengths().astype(np.int64))
    add = sums.add
    n_rows = (len(ids) - 1) // T
    starts = np.arange(n_rows) * T
    for i in range(0, n_rows, batch_size):
        add(ids[starts[i:i + batch_size, None] + np.arange(T + 1)])
    if n_rows * T + 1 < len(ids):
        add(ids[None, n_rows * T:])
    return {"bpb": sums.bpb() if sums.bytes else float("nan"), "loss": sums.nats / max(sums.tokens, 1),
            "tokens": sums.tokens, "bytes": sums.bytes}


def score_text_files(model, tokenizer, paths: list[str | Path], batch_size: int = 16) -> dict:
    """Each text file scored whole, as one document: {'files': [{'file', 'bpb', 'loss', 'tokens', 'bytes'}],
    'total': the same over all files (bytes-weighted, as if one stream)}."""
    bos = tokenizer.special_id("<|bos|>")
    texts = [Path(p).read_bytes().decode("utf-8", errors="replace") for p in paths]
    files = []
    for path, ids in zip(paths, tokenizer.encode_batch(texts)):
        r = score_tokens(model, tokenizer, np.asarray([bos] + ids, dtype=np.int32), batch_size)
        if r["bytes"] == 0:
            raise ValueError(f"{path} holds no text to score")
        files.append({"file": str(path), **r})
    nats = sum(f["loss"] * f["tokens"] for f in files)
    n_bytes, n_tok = sum(f["bytes"] for f in files), sum(f["tokens"] for f in files)
    return {"files": files, "total": {"bpb": nats / (math.log(2) * n_bytes), "loss": nats / n_tok, "tokens": n_tok,
                                      "bytes": n_bytes}}


def evaluate_shards(model, tokenizer, shards: list[str], tokens: int | None, batch_size: int = 16) -> dict:
    """val_bpb over token shards (.bin), the first `tokens` tokens (None: all of them)."""
    if tokens is None:
        bos = tokenizer.special_id("<|bos|>")
        tokens = _loader([str(p) for p in shards], 1, model.config.seq_len, bos, tokenizer.vocab_size).total_tokens
    return val_bpb(model, tokenizer, [str(p) for p in shards], tokens, batch_size)


__all__ = ["evaluate_shards", "score_text_files", "score_tokens", "val_bpb"]
