"""Token shards (format: csrc/data/shard.h, DESIGN.md section 6) and the loader that reads them.

    write_shard("train_000000.bin", tokens, vocab_size)       # atomic; uint16 when vocab <= 65536
    loader = make_loader("data/", "train", B=8, T=256, tokenizer=tok, seed=0)
    batch = loader.next()                                     # (B, T+1) int32; inputs [:, :-1], targets [:, 1:]
    state = loader.state(); ...; loader.set_state(state)      # exact resume
"""

from __future__ import annotations

from pathlib import Path

from nanowhale._C import Loader, read_shard, read_shard_header, write_shard


def shard_paths(directory: str | Path, split: str) -> list[str]:
    """The shards of one split ("train" or "val") in a prepared data directory, in order."""
    paths = sorted(str(p) for p in Path(directory).glob(f"{split}_*.bin"))
    if not paths:
        raise ValueError(f"no {split} shards ({split}_*.bin) in {directory}")
    return paths


def make_loader(directory, split, B, T, tokenizer, packed=True, seed=0, rank=0, world_size=1, **kw) -> Loader:
    """A Loader over one split of a prepared directory, checked against `tokenizer`'s vocabulary."""
    return Loader(shard_paths(directory, split), B, T, bos_id=tokenizer.special_id("<|bos|>"),
                  vocab_size=tokenizer.vocab_size, packed=packed, seed=seed, rank=rank, world_size=world_size, **kw)


def iterate(loader: Loader):
    """Yields batches until a sequential loader ends (a packed loader never does)."""
    while (batch := loader.next()) is not None:
        yield batch


__all__ = ["Loader", "iterate", "make_loader", "read_shard", "read_shard_header", "shard_paths", "write_shard"]
