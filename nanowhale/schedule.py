"""Schedules keyed on progress p in [0, 1] (DESIGN.md §4): p = step/steps, or training seconds/budget.

Each returns the multiplier or value the optimizer step takes; all are pure functions of p and the
train section, so a resumed run recomputes them exactly.
"""

from __future__ import annotations


def lr_mult(p: float, warmup_frac: float, decay_frac: float, final_frac: float) -> float:
    """Warmup-stable-decay: linear 0.01 -> 1 over warmup_frac, 1, then linear 1 -> final_frac over the last decay_frac."""
    if warmup_frac > 0 and p < warmup_frac:
        return max(p / warmup_frac, 0.01)  # floor: the first step still moves
    decay_start = 1.0 - decay_frac
    if p <= decay_start or decay_frac == 0:
        return 1.0
    frac = min(1.0, (p - decay_start) / decay_frac)
    return 1.0 + (final_frac - 1.0) * frac


def wd_mult(p: float, enabled: bool) -> float:
    """Weight decay decays linearly to 0 with progress (the decoupled decay matters early, not at the end)."""
    return max(0.0, 1.0 - p) if enabled else 1.0


def muon_momentum(p: float, start: float, end: float, warmup_frac: float) -> float:
    """Momentum warmed up linearly from `start` to `end` over the first warmup_frac of progress."""
    if warmup_frac <= 0 or p >= warmup_frac:
        return end
    return start + (end - start) * p / warmup_frac


def balance_gamma(p: float, gamma: float, decay_start: float, decay_end: float) -> float:
    """Balance-bias speed: gamma until decay_start, linearly down to 0 at decay_end, 0 after."""
    if p <= decay_start:
        return gamma
    if p >= decay_end:
        return 0.0
    return gamma * (decay_end - p) / (decay_end - decay_start)


__all__ = ["balance_gamma", "lr_mult", "muon_momentum", "wd_mult"]
