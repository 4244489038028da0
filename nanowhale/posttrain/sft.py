"""`nanowhale sft`: supervised fine-tuning of a checkpoint on conversations.

Conversations (sources.py) are rendered (conversation.py), split into train and held-out validation
conversations (a seeded shuffle), and packed whole into rows of seq_len + 1 tokens by the C++ best-fit
packer (csrc/data/conversation_pack.cpp; a conversation is cut only when it alone exceeds a row). An
optimizer step takes `batch_rows` rows in a per-epoch seeded order; the loss is the masked mean over the
step's supervised tokens: weights = mask / #supervised, one weighted forward_backward per micro-batch.
The validation loss is the same masked mean over the held-out rows.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

import nanowhale._C as _C
from nanowhale.conversation import render_dataset
from nanowhale.posttrain.batch import inputs_targets, split, step_rows, weighted_backward
from nanowhale.posttrain.sampling import sample_replies
from nanowhale.posttrain.sources import load_conversations
from nanowhale.posttrain.settings import SFTSettings
from nanowhale.posttrain.stage import Stage


@dataclass
class PackedSplit:
    tokens: np.ndarray    # (R, T + 1) int32
    mask: np.ndarray      # (R, T + 1) uint8: 1 where the token is learned
    conversations: int
    skipped: int          # nothing to learn (e.g. no assistant turn)
    truncated: int        # longer than a row: cut to its head


def pack(tok, conversations: list, row_len: int) -> PackedSplit:
    """Renders and packs conversations into rows of row_len tokens (C++ best fit)."""
    ds = render_dataset(tok, conversations, max_tokens=row_len)
    if not ds.ids:
        return PackedSplit(np.zeros((0, row_len), np.int32), np.zeros((0, row_len), np.uint8), 0, ds.skipped,
                           ds.truncated)
    offsets = np.zeros(len(ds.ids) + 1, np.int64)
    np.cumsum([len(x) for x in ds.ids], out=offsets[1:])
    tokens, mask, _, _ = _C.pack_conversations(np.concatenate(ds.ids), np.concatenate(ds.masks), offsets, row_len,
                                               tok.special_id("<|bos|>"))
    return PackedSplit(tokens, mask, len(ds.ids), ds.skipped, ds.truncated)


def masked_loss(model, rows: np.ndarray, mask: np.ndarray, batch: int) -> tuple[float, int]:
    """(mean loss over learned tokens, their count) of packed rows, without gradients."""
    total, count = 0.0, 0
    for i in range(0, len(rows), batch):
        inp, tgt, learned = inputs_targets(rows[i:i + batch], mask[i:i + batch])
        total += float(model.token_losses(inp, tgt).sum(dtype=np.float64))
        count += int(learned.sum())
    return (total / count if count else float("nan")), count


def sft(settings: SFTSettings | None = None, *, ckpt=None, resume=None, run_dir=None, log=print) -> dict:
    """Runs (or resumes) SFT; returns the summary dict."""
    t0 = time.perf_counter()
    stage = Stage("sft", settings or SFTSettings(), parent=ckpt, resume=resume, run_dir=run_dir, log=log)
    s, cfg = stage.settings, stage.cfg
    T = cfg.model["seq_len"]
    rows_per_step = s.batch_rows or max(1, cfg.train.batch_tokens // T)
    s = dataclasses.replace(s, batch_rows=rows_per_step,
                            micro_batch=s.micro_batch or math.gcd(rows_per_step, cfg.train.micro_batch))

    convs = [c for spec in s.data for c in load_conversations(spec, seed=s.seed)]
    train_convs, val_convs = split(convs, s.val_frac, s.val_max, s.seed)
    train, val = pack(stage.tok, train_convs, T + 1), pack(stage.tok, val_convs, T + 1)
    if len(train.tokens) == 0:
        raise ValueError(f"sft: none of the {len(train_convs)} training conversations has anything to learn "
                         f"({train.skipped} skipped)")
    if not s.steps:
        s = dataclasses.replace(s, steps=math.ceil(len(train.tokens) / s.batch_rows))  # one epoch
    stage.update_settings(s)
    supervised = int(train.mask[:, 1:].sum())
    stage.emit({"event": "data", "step": stage.step, "conversations": len(convs), "train_conversations":
                train.conversations, "val_conversations": val.conversations, "skipped": train.skipped + val.skipped,
                "truncated": train.truncated + val.truncated, "train_rows": len(train.tokens),
                "val_rows": len(val.tokens), "supervised_tokens": supervised,
                "fill": float((train.tokens != stage.tok.special_id("<|bos|>")).mean()) if len(train.tokens) else 0.0})
    log(f"sft: {train.conversations} train / {val.conversations} val conversations in {len(train.tokens)} / "
        f"{len(val.tokens)} rows of {T + 1} ({train.skipped + val.skipped} with nothing to learn skipped, "
        f"{train.truncated + val.truncated} truncated); {s.steps} steps of {s.batch_rows} rows")

    def evaluate() -> dict:
        rec = {"event": "eval", "step": stage.step}
        if len(val.tokens):
            rec["val_loss"], rec["val_tokens"] = masked_loss(stage.model, val.tokens, val.mask, s.micro_batch)
        if s.n_samples:
            rec["samples"] = sample_replies(stage.model, stage.tok, val_convs, s.n_samples)
        stage.emit(rec)
        return rec

    first = evaluate() if not stage.resumed else {}
    pos = stage.state.get("rows_done", 0)   # rows consumed since the start, over epochs
    n_rows = len(train.tokens)
    losses = []
    while stage.step < s.steps:
        ts = time.perf_counter()
        idx = step_rows(n_rows, s.seed, pos, s.batch_rows)
        pos += s.batch_rows
        rows, mask = train.tokens[idx], train.mask[idx]
        n_sup = int(mask[:, 1:].sum())
        # weights = mask / #supervised: the masked mean over the whole step, across micro-batches
        loss, bal = weighted_backward(stage.model, rows, mask, np.full(len(idx), 1.0 / max(n_sup, 1)), s.micro_batch)
        info = stage.optimizer_step()
        stage.check_finite(loss=loss, grad_norm=info["grad_norm"])
        losses.append(loss)
        stage.state = {"rows_done": pos}
        dt = time.perf_counter() - ts
        stage.after_step({"loss": loss, "supervised_tokens": n_sup, "balance_loss": bal, **info, "epoch": pos / n_rows,
                          "tok_per_s": s.batch_rows * T / dt, "step_seconds": dt}, evaluate)
    return stage.finish(evaluate, first, t0, lambda first, last: {
        "val_loss_start": first.get("val_loss"), "val_loss": last.get("val_loss"),
        "train_loss": losses[-1] if losses else None})


__all__ = ["SFTSettings", "masked_loss", "pack", "sft"]
