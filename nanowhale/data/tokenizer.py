"""The byte-level BPE tokenizer (C++: csrc/data/) and helpers around it.

    tok = train_tokenizer(iter_of_strings, vocab_size=32768)   # streaming: counts pieces batch by batch
    ids = tok.encode("hello")                                  # ordinary text; specials only if allowed
    tok.save("tok.nwtok"); Tokenizer.load("tok.nwtok")
    enc = to_tiktoken(tok)                                     # the same vocabulary as a tiktoken.Encoding
"""

from __future__ import annotations

from collections.abc import Iterable

from nanowhale._C import SPLIT_PATTERN, PieceCounter, Tokenizer, default_special_tokens


def train_tokenizer(
    docs: Iterable[str],
    vocab_size: int = 32768,
    special_tokens: list[str] | None = None,
    num_threads: int = 0,
    batch_bytes: int = 64 << 20,
    max_bytes: int | None = None,
) -> Tokenizer:
    """Trains a tokenizer on an iterable of documents, counting pieces in batches of ~batch_bytes.

    Stops reading after max_bytes of text when given. Deterministic for a given document sequence.
    """
    counter = PieceCounter()
    batch: list[str] = []
    size = total = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        total += len(doc)
        if size >= batch_bytes:
            counter.add(batch, num_threads)
            batch, size = [], 0
        if max_bytes is not None and total >= max_bytes:
            break
    if batch:
        counter.add(batch, num_threads)
    return Tokenizer.train_from_counter(counter, vocab_size, special_tokens or [], num_threads)


def to_tiktoken(tok: Tokenizer, name: str = "nanowhale"):
    """The same vocabulary as a tiktoken.Encoding (built offline from the ranks)."""
    import tiktoken

    return tiktoken.Encoding(
        name=name,
        pat_str=SPLIT_PATTERN,
        mergeable_ranks=tok.mergeable_ranks(),
        special_tokens=dict(tok.special_tokens),
    )


__all__ = ["SPLIT_PATTERN", "PieceCounter", "Tokenizer", "default_special_tokens", "to_tiktoken", "train_tokenizer"]
