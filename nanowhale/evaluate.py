"""val_bpb (DESIGN.md §7): the protected evaluation metric.

    val_bpb = sum(nats over target tokens) / (ln 2 * sum(raw UTF-8 bytes of target tokens))

over the first `tokens // T` rows of the sequential validation stream (row g = tokens [g*T, g*T + T + 1)),
so the evaluated positions depend neither on the batch size nor on anything else but T and the shards.
Targets that are special tokens (byte length 0: <|bos|>, chat tokens) are excluded from both sums. Sums
are float64. The research harness records a checksum of this file: change it only on purpose.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from nanowhale.data.shards import Loader, write_shard


def _loader(paths: list[str], B: int, T: int, bos_id: int, vocab_size: int) -> Loader:
    return Loader(paths, B, T, bos_id=bos_id, vocab_size=vocab_size, packed=False, seed=0)


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
    nats, n_bytes, n_tok = 0.0, 0, 0

    def add(batch: np.ndarray) -> None:
        nonlocal nats, n_bytes, n_tok
        x, y = batch[:, :-1], batch[:, 1:].copy()
        b = byte_len[y]
        y[b == 0] = -1  # special tokens: no loss, no bytes
        nats += float(model.token_losses(x, y).sum(dtype=np.float64))
        n_bytes += int(b.sum())
        n_tok += int((b > 0).sum())

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
    if n_bytes == 0:
        raise ValueError("validation targets contain no ordinary tokens")
    return {"val_bpb": nats / (math.log(2) * n_bytes), "val_loss": nats / n_tok, "tokens": n_tok,
            "bytes": n_bytes, "rows": n_rows}


def shards_from_texts(paths: list[str | Path], tokenizer, out_dir: str | Path) -> list[str]:
    """Tokenizes text files (each one document, <|bos|> first) into one shard in out_dir; returns its path."""
    bos = tokenizer.special_id("<|bos|>")
    docs = [Path(p).read_bytes().decode("utf-8", errors="replace") for p in paths]
    ids = tokenizer.encode_batch(docs)
    tokens = np.concatenate([np.asarray([bos] + d, dtype=np.int32) for d in ids])
    path = str(Path(out_dir) / "val_000000.bin")
    write_shard(path, tokens, tokenizer.vocab_size)
    return [path]


def evaluate_files(model, tokenizer, inputs: list[str], tokens: int, batch_size: int = 16) -> dict:
    """val_bpb on shards (.bin) or text files (anything else), in the order given."""
    shards = [p for p in inputs if str(p).endswith(".bin")]
    texts = [p for p in inputs if not str(p).endswith(".bin")]
    if shards and texts:
        raise ValueError("give either token shards (.bin) or text files, not both")
    if shards:
        return val_bpb(model, tokenizer, [str(p) for p in shards], tokens, batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        return val_bpb(model, tokenizer, shards_from_texts(texts, tokenizer, tmp), tokens, batch_size)


__all__ = ["evaluate_files", "shards_from_texts", "val_bpb"]
