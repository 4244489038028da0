"""The size class a rung owns: its model's active parameters and training FLOPs per token.

At a fixed FLOP or token budget a smaller model sees more tokens, so an experiment that shrinks the model
wins at the bottom rung by finding the compute-optimal size of a one-minute run, a finding that does not
transfer. An experiment may reallocate the rung's size (depth for width, experts for expert width,
head_dim, dense for MoE layers) but not change it beyond the ladder's `size_tolerance` (±10% by default);
`research init --free-size` lifts the lock for a user who wants the best size for a budget.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TOLERANCE = 0.10


@dataclass
class Size:
    active_params: int
    flops_per_token: float

    @staticmethod
    def of(cfg) -> "Size":
        m = cfg.model_config()
        return Size(int(m.num_active_params()), float(m.flops_per_token()))


def _rel(x: float, ref: float) -> float:
    return x / ref - 1.0


def changed_model_keys(ref_cfg, cfg) -> list[str]:
    """`model.KEY REF -> NEW` for every model key that differs."""
    return [f"model.{k} {ref_cfg.model[k]} -> {v}" for k, v in cfg.model.items() if ref_cfg.model.get(k) != v]


def refusal(ref_cfg, cfg, tolerance: float) -> str | None:
    """Why cfg is outside ref_cfg's size class (the numbers and the model keys that differ), or None."""
    ref, new = Size.of(ref_cfg), Size.of(cfg)
    da, df = _rel(new.active_params, ref.active_params), _rel(new.flops_per_token, ref.flops_per_token)
    if abs(da) <= tolerance and abs(df) <= tolerance:
        return None
    keys = changed_model_keys(ref_cfg, cfg)
    return (f"the model leaves the rung's size class (±{tolerance:.0%}): active parameters "
            f"{new.active_params:,} vs {ref.active_params:,} ({da:+.1%}), FLOPs/token {new.flops_per_token:.4g} "
            f"vs {ref.flops_per_token:.4g} ({df:+.1%}); changed keys: {', '.join(keys) or 'none (code)'}")


__all__ = ["DEFAULT_TOLERANCE", "Size", "changed_model_keys", "refusal"]
