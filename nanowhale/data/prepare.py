"""`nanowhale data prepare`: documents -> tokenizer + train/val token shards, resumable.

Output directory:
    tokenizer.nwtok          the tokenizer (trained here, or a copy of --tokenizer)
    train_000000.bin ...     token shards (csrc/data/shard.h); every document starts with <|bos|>
    val_000000.bin ...
    prepare_state.json       progress: for each split, the index of the first document not yet in a shard
    downloads/               files fetched from URLs

Document i (in the deterministic order of iter_documents) goes to val when i % val_every == 0, else to
train; with `val_sources` (`--val`), the inputs are all train and the validation split is those sources
(e.g. a corpus's own val.jsonl.gz). A shard is written once its buffer holds >= shard_tokens tokens, and the state file is rewritten
(atomically) after every shard. An interrupted run restarts from the state: documents already in shards
are skipped, and a shard file written after the last state update is simply rewritten, identically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from nanowhale.data.shards import write_shard
from nanowhale.data.sources import STDLIB, download, iter_documents
from nanowhale.data.tokenizer import Tokenizer, train_tokenizer

STATE = "prepare_state.json"
TOKENIZER = "tokenizer.nwtok"
SPLITS = ("train", "val")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _progress(enabled: bool, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(desc=desc, unit="B", unit_scale=True, disable=not enabled, mininterval=0.5)


def _documents(sources: list[str], val_sources: list[str] | None, val_every: int, max_docs: int | None):
    """(split, index, text) of every document to prepare, in a fixed order. Without val_sources, document i
    of the inputs goes to val when i % val_every == 0 (one numbering for both splits); with them, every input
    document is train (the first max_docs) and every val_sources document is val, each split numbered from 0."""
    for i, text in enumerate(iter_documents(sources)):
        if max_docs is not None and i >= max_docs:
            break
        yield ("train" if val_sources or i % val_every else "val"), i, text
    for i, text in enumerate(iter_documents(val_sources) if val_sources else ()):
        yield "val", i, text


def prepare(
    inputs: list[str] | None = None,
    out_dir: str | Path = "data",
    urls: list[str] | None = None,
    tokenizer: str | Path | None = None,
    vocab_size: int = 32768,
    tokenizer_train_bytes: int = 200_000_000,
    shard_tokens: int = 100_000_000,
    val_every: int = 100,
    num_threads: int = 0,
    max_docs: int | None = None,
    val_sources: list[str] | None = None,
    progress: bool = True,
    _stop_after_shards: int | None = None,  # tests: simulate an interruption after this many shards
) -> dict:
    """Prepares shards in out_dir (see the module docstring); returns the final state."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = [str(s) for s in (inputs or [])]
    for url in urls or []:
        sources.append(str(download(url, out / "downloads")))
    if not sources:
        sources = [STDLIB]
    if val_every < 2:
        raise ValueError(f"val_every must be >= 2, got {val_every}")
    config = {"sources": sources, "shard_tokens": shard_tokens, "val_every": val_every, "max_docs": max_docs}
    if val_sources:  # only when given, so directories prepared before --val existed still resume
        config["val_sources"] = [str(s) for s in val_sources]

    state_path = out / STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if state is not None and state["config"] != config:
        raise ValueError(f"{out} holds a preparation with different settings ({state['config']}); "
                         f"use another directory or delete {state_path}")
    if state is not None and state.get("done"):
        return state

    tok_path = out / TOKENIZER
    if tok_path.exists():
        tok = Tokenizer.load(str(tok_path))
    elif tokenizer is not None:
        shutil.copyfile(tokenizer, tok_path)
        tok = Tokenizer.load(str(tok_path))
    else:
        docs = (t for split, _, t in _documents(sources, val_sources, val_every, max_docs) if split == "train")
        tok = train_tokenizer(docs, vocab_size=vocab_size, num_threads=num_threads, max_bytes=tokenizer_train_bytes)
        tok.save(str(tok_path))
    if state is None:
        state = {"version": 1, "config": config, "tokenizer": tok.fingerprint, "done": False,
                 "next_doc": {s: 0 for s in SPLITS}, "shards": {s: 0 for s in SPLITS},
                 "tokens": {s: 0 for s in SPLITS}}
        _write_json(state_path, state)
    if state["tokenizer"] != tok.fingerprint:
        raise ValueError(f"{tok_path} is not the tokenizer these shards were started with")

    bos = tok.special_id("<|bos|>")
    buffers: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    counts = {s: 0 for s in SPLITS}
    written = 0

    def flush(split: str, next_doc: int) -> None:
        nonlocal written
        if buffers[split]:
            tokens = np.concatenate(buffers[split])
            write_shard(str(out / f"{split}_{state['shards'][split]:06d}.bin"), tokens, tok.vocab_size)
            state["shards"][split] += 1
            state["tokens"][split] += int(tokens.size)
        state["next_doc"][split] = next_doc
        buffers[split], counts[split] = [], 0
        _write_json(state_path, state)
        written += 1

    bar = _progress(progress, f"tokenizing into {out}")
    batch: list[tuple[int, str, str]] = []
    batch_bytes = 0

    def process(batch) -> bool:
        ids = tok.encode_batch([t for _, _, t in batch], num_threads=num_threads)
        for (i, split, text), doc_ids in zip(batch, ids):
            buffers[split].append(np.asarray([bos] + doc_ids, dtype=np.int32))
            counts[split] += len(doc_ids) + 1
            if counts[split] >= shard_tokens:
                flush(split, i + 1)
                if _stop_after_shards is not None and written >= _stop_after_shards:
                    return False
        if bar is not None:
            bar.update(sum(len(t) for _, _, t in batch))
        return True

    seen = dict.fromkeys(SPLITS, 0)  # per split: documents met so far (its numbering)
    for split, i, text in _documents(sources, val_sources, val_every, max_docs):
        seen[split] = i + 1
        if i < state["next_doc"][split]:
            continue
        batch.append((i, split, text))
        batch_bytes += len(text)
        if batch_bytes >= 16 << 20 or len(batch) >= 4096:
            if not process(batch):
                return state
            batch, batch_bytes = [], 0
    if batch and not process(batch):
        return state
    for split in SPLITS:
        flush(split, max(seen[split], state["next_doc"][split]))
    if bar is not None:
        bar.close()
    state["done"] = True
    _write_json(state_path, state)
    return state


__all__ = ["prepare"]
