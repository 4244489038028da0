"""Rows of token ids with loss masks, as the post-training stages feed them to the engine.

A row holds T + 1 ids; its inputs are ids[:-1], its targets ids[1:], kept (learned) where mask[1:] is 1 and
-1 (ignored) elsewhere. Every loss of every stage is then `model.forward_backward(inputs, targets, weights)`
with per-token weights (SFT: mask / #learned; DPO: ±β·σ(−margin) per sequence; RL: advantage / #tokens).
"""

from __future__ import annotations

import numpy as np


def inputs_targets(rows: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets with -1 where not learned, learned bool), each (R, T), of rows (R, T + 1)."""
    learned = mask[:, 1:].astype(bool)
    return rows[:, :-1], np.where(learned, rows[:, 1:], -1), learned


def pad_rows(ids: list[np.ndarray], masks: list[np.ndarray], row_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """One sequence per row, cut to row_len and padded with pad_id (mask 0): (R, row_len) int32, uint8."""
    rows = np.full((len(ids), row_len), pad_id, np.int32)
    mask = np.zeros((len(ids), row_len), np.uint8)
    for i, (x, m) in enumerate(zip(ids, masks)):
        n = min(len(x), row_len)
        rows[i, :n], mask[i, :n] = x[:n], m[:n]
    return rows, mask


def sequence_logps(model, rows: np.ndarray, mask: np.ndarray, batch: int) -> np.ndarray:
    """(R,) float64: each row's summed log-probability of its learned tokens (no gradients)."""
    out = np.zeros(len(rows))
    for i in range(0, len(rows), batch):
        inp, tgt, _ = inputs_targets(rows[i:i + batch], mask[i:i + batch])
        out[i:i + batch] = -model.token_losses(inp, tgt).sum(axis=1, dtype=np.float64)
    return out


def weighted_backward(model, rows: np.ndarray, mask: np.ndarray, weights: np.ndarray, batch: int) -> tuple[float, float]:
    """Adds the gradient of sum over learned tokens of weight * CE, with weights per row (R,) or per target
    token (R, T); returns that weighted sum and the mean balance loss over the micro-batches."""
    inp, tgt, learned = inputs_targets(rows, mask)
    weights = np.asarray(weights, np.float64)
    weights = (learned * (weights[:, None] if weights.ndim == 1 else weights)).astype(np.float32)
    loss = bal = 0.0
    n = 0
    for i in range(0, len(rows), batch):
        sl = slice(i, i + batch)
        loss += model.forward_backward(inp[sl], tgt[sl], weights=weights[sl])
        bal += model.last_balance_loss
        n += 1
    return loss, bal / max(n, 1)


def step_rows(n: int, seed: int, pos: int, count: int) -> np.ndarray:
    """Indices pos .. pos+count-1 of the endless sequence of seeded per-epoch permutations of range(n)."""
    out = []
    while count:
        epoch, off = divmod(pos, n)
        take = min(count, n - off)
        out.append(np.random.default_rng([seed, epoch]).permutation(n)[off:off + take])
        pos, count = pos + take, count - take
    return np.concatenate(out)


def split(items: list, val_frac: float, val_max: int, seed: int) -> tuple[list, list]:
    """(train, val): a seeded shuffle, the first min(val_max, round(val_frac * n)) held out."""
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = min(val_max, int(round(val_frac * len(items))))
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


__all__ = ["inputs_targets", "pad_rows", "sequence_logps", "split", "step_rows", "weighted_backward"]
