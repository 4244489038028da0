"""Helpers for the training-program tests: a micro corpus prepared once per session, and micro run configs."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the whale swims deep under cold grey water while small fish gather near a reef of stone and "
         "light falls in long lines def return class import value index print self list range").split()


def write_corpus(directory: Path, n_docs: int = 120, seed: int = 0) -> Path:
    """n_docs small text files of seeded pseudo-sentences (~100 KB in all)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        sentences = []
        for _ in range(rng.randint(4, 12)):
            n = rng.randint(4, 14)
            sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
        (directory / f"doc_{i:04d}.txt").write_text(" ".join(sentences) + f" Number {rng.randint(0, 999)}.\n")
    return directory


def prepare_micro_data(root: Path, vocab_size: int = 320) -> Path:
    from nanowhale.data.prepare import prepare

    corpus = write_corpus(root / "corpus")
    out = root / "data"
    prepare(inputs=[str(corpus)], out_dir=out, vocab_size=vocab_size, tokenizer_train_bytes=10_000_000,
            shard_tokens=4000, val_every=4, progress=False)
    return out


def micro_run_config(data_dir: Path, run_dir: Path, vocab_size: int, **sections) -> dict:
    """A full run config dict: a ~50k-parameter MoE model, a few steps of 2 x (4 x 32) tokens."""
    cfg = {
        "model": dict(vocab_size=vocab_size, seq_len=32, d_model=32, n_layer=2, n_head=2, n_kv_head=1, head_dim=16,
                      n_dense_layers=1, dense_hidden=64, n_experts=4, top_k=2, expert_hidden=32, n_shared=1,
                      shared_hidden=32),
        "train": dict(steps=8, batch_tokens=256, micro_batch=4, threads=2),
        "data": dict(dir=str(data_dir)),
        "eval": dict(tokens=1024, batch_size=4),
        "sample": dict(n=0),
        "run": dict(dir=str(run_dir)),
        # the learning rates these micro runs were tuned with (before tiny's own were raised): tests that
        # expect e.g. an RL reward to still have room to rise depend on them
        "optim": {"muon_lr": 0.02, "embed": {"lr": 0.05}, "head": {"lr": 0.004}},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


