"""nw.load(checkpoint): a trained model with its tokenizer and config, for notebooks and the research harness.

    run = nw.load("runs/20260101-120000")          # a run directory (its latest checkpoint) or a checkpoint
    run.sample(["def "], n=2, temperature=0.8)      # text completions (C++ KV-cache generation)
    run.model.generate(prompt_ids, 32)              # the engine's API directly
    run.val_bpb()                                   # on the validation shards the run trained with
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nanowhale._C as _C
from nanowhale.checkpoint import TOKENIZER_FILE, Checkpoint, open_checkpoint
from nanowhale.config import RunConfig
from nanowhale.data.shards import shard_paths
from nanowhale.data.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    model: _C.Model
    tokenizer: Tokenizer
    config: RunConfig
    checkpoint: Checkpoint

    @property
    def step(self) -> int:
        return self.checkpoint.meta["step"]

    def sample(self, prompts: list[str] | str, n: int = 1, max_new_tokens: int = 64, temperature: float = 0.8,
               top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> list[str]:
        from nanowhale.generate import sample

        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return sample(self.model, self.tokenizer, prompts, n, max_new_tokens, temperature, top_k, top_p, seed)

    def val_bpb(self, shards: list[str] | None = None, tokens: int | None = None,
                batch_size: int | None = None) -> dict:
        """val_bpb on token shards: by default the val shards of the data the run trained on, over the run's
        eval.tokens (as training measured it); given shards, over all their tokens unless `tokens` is set."""
        from nanowhale.evaluate import evaluate_shards

        batch_size = batch_size or self.config.eval.batch_size
        if not shards:
            data_dir = self.checkpoint.meta.get("data_dir")
            if not data_dir or not Path(data_dir).exists():
                raise ValueError(f"the run's data directory {data_dir} is not here; give shards or text files")
            shards, tokens = shard_paths(data_dir, "val"), tokens or self.config.eval.tokens
        return evaluate_shards(self.model, self.tokenizer, list(shards), tokens, batch_size)

    def score_files(self, paths: list[str], batch_size: int | None = None) -> dict:
        """Bits per byte of each text file, scored whole: {'files': [...], 'total': {...}}."""
        from nanowhale.evaluate import score_text_files

        return score_text_files(self.model, self.tokenizer, list(paths), batch_size or self.config.eval.batch_size)


def load(path: str | Path, device: str = "auto", precision: str | None = None) -> LoadedModel:
    """Loads a checkpoint (or a run directory's latest) onto `device` (auto: cuda when available). Its
    matmuls run in `precision` (auto, bf16, fp32); by default the run's train.precision, so that a GPU
    evaluates a checkpoint as its training run's evals did (bf16), a CPU in fp32."""
    from nanowhale.trainer import choose_precision

    ck = open_checkpoint(path)
    cfg = RunConfig.from_dict(ck.config)
    if device == "auto":
        device = "cuda" if _C.cuda_available() else "cpu"
    precision = precision or cfg.train.precision
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    model = _C.Model(cfg.model_config(), seed=0, device=device)
    model.precision = choose_precision(precision, device)
    ck.load_model(model)
    tok = Tokenizer.load(str(ck.verify(TOKENIZER_FILE)))
    want = ck.meta.get("tokenizer", {}).get("fingerprint")
    if want and tok.fingerprint != want:
        raise ValueError(f"checkpoint {ck.dir} is corrupt: its tokenizer's fingerprint {tok.fingerprint} is not {want}")
    return LoadedModel(model, tok, cfg, ck)


__all__ = ["LoadedModel", "load"]
