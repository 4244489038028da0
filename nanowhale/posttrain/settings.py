"""The settings of each post-training stage: plain dataclasses (one flag each on the command line), kept apart
from the stages' code so that building the `nanowhale` parser imports neither NumPy nor the extension."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass
class StageSettings:
    """Settings every stage has; each stage subclasses this with its own fields and defaults."""

    steps: int = 50                 # optimizer steps (sft: 0 = one epoch of its data)
    lr_scale: float = 0.5           # learning rates = the parent run's optim LRs times this
    warmup_frac: float = 0.0
    decay_frac: float = 1.0         # linear decay to final_lr_frac over the last decay_frac of the steps
    final_lr_frac: float = 0.0
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    log_every: int = 1
    checkpoint_every: int = 0       # 0: only at the end
    keep: int = 2
    eval_every: int = 0             # held-out evaluation every N steps (0: at the start and the end only)
    n_samples: int = 3              # greedy replies to held-out prompts logged with each evaluation

    def validate(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps: must be >= 0, got {self.steps}")
        for k in ("log_every", "keep"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k}: must be >= 1, got {getattr(self, k)}")
        if not (self.lr_scale >= 0 and math.isfinite(self.lr_scale)):
            raise ValueError(f"lr_scale: must be finite and >= 0, got {self.lr_scale}")
        for k in ("warmup_frac", "decay_frac", "final_lr_frac"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k}: must be in [0, 1], got {getattr(self, k)}")
        if self.warmup_frac + self.decay_frac > 1.0:
            raise ValueError("decay_frac: warmup_frac + decay_frac must be <= 1")
        for k in ("checkpoint_every", "threads", "eval_every", "n_samples"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k}: must be >= 0, got {getattr(self, k)}")


def settings_from_dict(cls, d: dict):
    """A settings dataclass from a dict, naming unknown keys (a typo never silently trains the default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} (known: {', '.join(sorted(names))})")
    s = cls(**d)
    s.validate()
    return s


@dataclass
class SFTSettings(StageSettings):
    data: list = field(default_factory=list)   # sources (sources.py)
    val_frac: float = 0.05        # conversations held out for the masked validation loss
    val_max: int = 256            # at most this many held out
    batch_rows: int = 0           # rows per optimizer step (0: the parent's batch_tokens / seq_len)
    micro_batch: int = 0          # rows per forward/backward (0: the parent's train.micro_batch)

    def validate(self) -> None:
        super().validate()
        if not self.data:
            raise ValueError("sft needs --data (conversation files or task:NAME)")
        if not 0.0 <= self.val_frac < 1.0:
            raise ValueError(f"val_frac: must be in [0, 1), got {self.val_frac}")
        for k in ("val_max", "batch_rows", "micro_batch"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k}: must be >= 0, got {getattr(self, k)}")
        if self.micro_batch and self.batch_rows and self.batch_rows % self.micro_batch:
            raise ValueError(f"batch_rows ({self.batch_rows}) must be a multiple of micro_batch ({self.micro_batch})")


@dataclass
class DPOSettings(StageSettings):
    data: list = field(default_factory=list)   # pair files: hh-rlhf {"chosen", "rejected"} dialogue strings,
                                               # or {"chosen": messages, "rejected": messages}
    beta: float = 0.1
    lr_scale: float = 0.1
    batch_pairs: int = 8          # pairs per optimizer step
    micro_batch: int = 8          # rows (sequences) per forward
    val_frac: float = 0.05
    val_max: int = 128

    def validate(self) -> None:
        super().validate()
        if not self.data:
            raise ValueError("dpo needs --data (preference pair files)")
        if not self.beta > 0:
            raise ValueError(f"beta: must be > 0, got {self.beta}")
        if self.batch_pairs < 1 or self.micro_batch < 1:
            raise ValueError("batch_pairs and micro_batch must be >= 1")
        if not 0.0 <= self.val_frac < 1.0:
            raise ValueError(f"val_frac: must be in [0, 1), got {self.val_frac}")


@dataclass
class RLSettings(StageSettings):
    task: str = "arith"
    prompts: int = 4              # problems per step
    group: int = 8                # samples per problem (one batched generation)
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_k: int = 0
    kl: float = 0.0               # k3 KL-to-start coefficient (0: off, no second model)
    lr_scale: float = 0.3
    decay_frac: float = 0.0       # constant learning rate
    micro_batch: int = 16         # rows per forward/backward
    eval_problems: int = 64

    def validate(self) -> None:
        super().validate()
        for k in ("prompts", "group", "max_new_tokens", "micro_batch"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k}: must be >= 1, got {getattr(self, k)}")
        if self.group < 2:
            raise ValueError("group: must be >= 2 (the advantage is relative to the group's mean)")
        if self.temperature < 0 or self.kl < 0 or self.top_k < 0 or self.eval_problems < 0:
            raise ValueError("temperature, kl, top_k and eval_problems must be >= 0")


__all__ = ["DPOSettings", "RLSettings", "SFTSettings", "StageSettings", "settings_from_dict"]
