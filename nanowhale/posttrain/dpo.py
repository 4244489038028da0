"""`nanowhale dpo`: Direct Preference Optimization on chosen/rejected conversation pairs.

For a pair, with log-probabilities summed over the final assistant turn (its tokens and end token); a
dialogue longer than a row keeps its last seq_len + 1 tokens, so the final turn stays whole and only the
earliest context goes (a pair whose final turn alone is longer is skipped and counted):
    margin = β·[(log π(chosen) − log π_ref(chosen)) − (log π(rejected) − log π_ref(rejected))]
    loss   = −log σ(margin), averaged over the pairs of a step.
π_ref is the starting model: its log-probs are computed once, before the first step, and kept
(RUN/reference_logps.npz), so no second model is held in memory. A step runs one forward for the policy
log-probs, then one weighted forward_backward: weights −β·σ(−margin)/P... with the sign that lowers the loss:
d loss / d CE_t = +β·σ(−margin)/P on chosen tokens and −β·σ(−margin)/P on rejected ones (CE = −log π).
Logged: loss, reward accuracy (margin > 0), mean margin, chosen/rejected rewards β·(log π − log π_ref) and
log-probs, on the step's pairs and on held-out pairs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from nanowhale.conversation import json_lines, openai_messages, parse_hh_dialogue, render_dataset
from nanowhale.posttrain.batch import pad_rows, sequence_logps, split, step_rows, weighted_backward
from nanowhale.posttrain.sampling import sample_replies
from nanowhale.posttrain.settings import DPOSettings
from nanowhale.posttrain.stage import Stage


def load_pairs(path) -> list[tuple[list, list]]:
    """(chosen messages, rejected messages) per line of a pair file."""
    out = []
    for n, obj in json_lines(path):
        where = f"{path}:{n}"
        if not isinstance(obj, dict) or "chosen" not in obj or "rejected" not in obj:
            raise ValueError(f"{where}: expected an object with 'chosen' and 'rejected'")
        sides = []
        for side in ("chosen", "rejected"):
            v = obj[side]
            sides.append(parse_hh_dialogue(v, where=f"{where} {side}") if isinstance(v, str)
                         else openai_messages({"messages": v}, where=f"{where} {side}"))
        out.append(tuple(sides))
    return out


@dataclass
class PairRows:
    """Pairs as rows: chosen i is row i, rejected i is row P + i; masks cover only the final assistant turn."""

    rows: np.ndarray      # (2P, T + 1) int32
    mask: np.ndarray      # (2P, T + 1) uint8
    pairs: int
    skipped: int          # a side whose final assistant turn alone is longer than a row


def final_turn_mask(ids: np.ndarray, mask: np.ndarray, assistant_start: int) -> np.ndarray:
    """The loss mask restricted to the tokens after the last <|assistant_start|> (the response being compared)."""
    starts = np.flatnonzero(ids == assistant_start)
    out = np.zeros_like(mask)
    if starts.size:
        out[starts[-1] + 1:] = mask[starts[-1] + 1:]
    return out


def fit_final_turn(ids: np.ndarray, mask: np.ndarray, row_len: int, assistant_start: int):
    """(ids, mask) cut to at most row_len tokens so that the final assistant turn stays whole: a longer
    dialogue keeps its last row_len tokens (the earliest context goes). None when the final turn alone is
    longer than a row."""
    if len(ids) <= row_len:
        return ids, mask
    start = np.flatnonzero(ids == assistant_start)[-1]
    if len(ids) - start > row_len:
        return None
    return ids[-row_len:], mask[-row_len:]


def pair_rows(tok, pairs: list, row_len: int) -> PairRows:
    chosen = render_dataset(tok, [c for c, _ in pairs], max_tokens=None)
    rejected = render_dataset(tok, [r for _, r in pairs], max_tokens=None)
    if chosen.skipped or rejected.skipped:
        raise ValueError("dpo: every pair needs an assistant turn on both sides")
    a_start = tok.special_id("<|assistant_start|>")
    kept: list[list] = [[], [], [], []]  # chosen ids, rejected ids, chosen masks, rejected masks
    for i in range(len(pairs)):
        c = fit_final_turn(chosen.ids[i], final_turn_mask(chosen.ids[i], chosen.masks[i], a_start), row_len, a_start)
        r = fit_final_turn(rejected.ids[i], final_turn_mask(rejected.ids[i], rejected.masks[i], a_start), row_len,
                           a_start)
        if c is not None and r is not None:
            for lst, x in zip(kept, (c[0], r[0], c[1], r[1])):
                lst.append(x)
    rows, mask = pad_rows(kept[0] + kept[1], kept[2] + kept[3], row_len, tok.special_id("<|bos|>"))
    return PairRows(rows, mask, len(kept[0]), len(pairs) - len(kept[0]))


def select(p: PairRows, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and masks of pairs idx: their chosen rows, then their rejected rows."""
    both = np.concatenate([idx, idx + p.pairs])
    return p.rows[both], p.mask[both]


def dpo_stats(policy: np.ndarray, ref: np.ndarray, beta: float) -> dict:
    """DPO loss and metrics from (2P,) policy and reference log-probs (chosen first)."""
    P = len(policy) // 2
    rewards = beta * (policy - ref)
    margin = rewards[:P] - rewards[P:]
    return {"loss": float(np.mean(np.logaddexp(0.0, -margin))), "reward_accuracy": float(np.mean(margin > 0)),
            "margin": float(margin.mean()), "chosen_reward": float(rewards[:P].mean()),
            "rejected_reward": float(rewards[P:].mean()), "chosen_logp": float(policy[:P].mean()),
            "rejected_logp": float(policy[P:].mean()), "_margin": margin}


def dpo_backward(model, rows: np.ndarray, mask: np.ndarray, ref: np.ndarray, beta: float, micro_batch: int) -> dict:
    """Adds the gradient of the mean DPO loss over the pairs in rows (chosen first); returns dpo_stats."""
    policy = sequence_logps(model, rows, mask, micro_batch)
    st = dpo_stats(policy, ref, beta)
    P = len(rows) // 2
    coef = beta / (1.0 + np.exp(st.pop("_margin"))) / P        # β·σ(−margin)/P per pair
    _, st["balance_loss"] = weighted_backward(model, rows, mask, np.concatenate([coef, -coef]), micro_batch)
    return st


def dpo(settings: DPOSettings | None = None, *, ckpt=None, resume=None, run_dir=None, log=print) -> dict:
    t0 = time.perf_counter()
    stage = Stage("dpo", settings or DPOSettings(), parent=ckpt, resume=resume, run_dir=run_dir, log=log)
    s = stage.settings
    T = stage.cfg.model["seq_len"]
    pairs = [p for path in s.data for p in load_pairs(path)]
    train_pairs, val_pairs = split(pairs, s.val_frac, s.val_max, s.seed)
    train, val = pair_rows(stage.tok, train_pairs, T + 1), pair_rows(stage.tok, val_pairs, T + 1)
    if train.pairs == 0:
        raise ValueError(f"dpo: none of the {len(train_pairs)} training pairs fits seq_len {T}")

    ref_path = stage.run_dir / "reference_logps.npz"
    if stage.resumed:
        ref = np.load(ref_path)
        ref_train, ref_val = ref["train"], ref["val"]
    else:  # the frozen starting model, once
        ref_train = sequence_logps(stage.model, train.rows, train.mask, s.micro_batch)
        ref_val = sequence_logps(stage.model, val.rows, val.mask, s.micro_batch)
        np.savez(ref_path, train=ref_train, val=ref_val)
    stage.emit({"event": "data", "step": stage.step, "pairs": len(pairs), "train_pairs": train.pairs,
                "val_pairs": val.pairs, "skipped": train.skipped + val.skipped})
    log(f"dpo: {train.pairs} train / {val.pairs} val pairs ({train.skipped + val.skipped} skipped: a final "
        f"turn longer than seq_len {T}); {s.steps} steps of {s.batch_pairs} pairs, beta {s.beta}")

    def evaluate() -> dict:
        rec = {"event": "eval", "step": stage.step}
        if val.pairs:
            pol = sequence_logps(stage.model, val.rows, val.mask, s.micro_batch)
            st = dpo_stats(pol, ref_val, s.beta)
            st.pop("_margin")
            rec.update({f"val_{k}": v for k, v in st.items()})
        if s.n_samples:
            rec["samples"] = sample_replies(stage.model, stage.tok, [c for c, _ in val_pairs], s.n_samples)
        stage.emit(rec)
        return rec

    first = evaluate() if not stage.resumed else {}
    pos = stage.state.get("pairs_done", 0)
    while stage.step < s.steps:
        ts = time.perf_counter()
        idx = step_rows(train.pairs, s.seed, pos, s.batch_pairs)
        pos += s.batch_pairs
        rows, mask = select(train, idx)
        st = dpo_backward(stage.model, rows, mask, np.concatenate([ref_train[idx], ref_train[idx + train.pairs]]),
                          s.beta, s.micro_batch)
        info = stage.optimizer_step()
        stage.check_finite(loss=st["loss"], grad_norm=info["grad_norm"])
        stage.state = {"pairs_done": pos}
        stage.after_step({**st, **info, "epoch": pos / train.pairs, "step_seconds": time.perf_counter() - ts},
                         evaluate)
    return stage.finish(evaluate, first, t0, lambda first, last: {
        "val_reward_accuracy_start": first.get("val_reward_accuracy"),
        "val_reward_accuracy": last.get("val_reward_accuracy"), "val_loss_start": first.get("val_loss"),
        "val_loss": last.get("val_loss"), "val_margin": last.get("val_margin")})


__all__ = ["DPOSettings", "dpo", "dpo_backward", "dpo_stats", "load_pairs", "pair_rows"]
