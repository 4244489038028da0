"""nanowhale as an lm-evaluation-harness model (`lm-eval` 0.4.x): the harness's three request kinds over the
engine, registered under the name `nanowhale`.

    python -m nanowhale.lm_eval --model nanowhale --model_args ckpt=RUN --tasks nanowhale_hellaswag --limit 200
    lm_eval --model nanowhale ...        # installed: nanowhale_lm_eval_hook adds the model to lm-eval's table
    nanowhale eval --ckpt RUN --harness hellaswag,piqa      # the same, results in RUN/eval_harness.json

    loglikelihood          (context, continuation) -> (log p(continuation | <|bos|> context), is_greedy): the
                           engine's batched token_losses (rows sorted by length, the GIL released), exactly what
                           `nanowhale eval --task` scores; is_greedy from the logits' argmax.
    loglikelihood_rolling  a whole document -> its log-likelihood, scored as `nanowhale eval FILE` scores a file.
    generate_until         (context, {until, max_gen_toks}) -> the greedy continuation cut before the first stop
                           string: every request at once through the C++ continuous batch (batch_size
                           generations per forward, longest prompt first), as `nanowhale eval --task gsm8k`
                           generates.

Model arguments: ckpt (a run or a checkpoint directory), device (auto, cpu or cuda; lm-eval's default cuda:0
falls back to the CPU when no GPU is here), batch_size (rows per forward; auto: 16). Sampling settings in a
task's generation_kwargs are refused: the engine's harness model decodes greedily.
"""

from __future__ import annotations

import logging

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from nanowhale.tasks.scoring import ModelScorer

log = logging.getLogger(__name__)
DEFAULT_BATCH_ROWS = 16


def engine_device(device: str | None) -> str:
    """The engine's device for lm-eval's --device: cuda[:N] -> cuda (the CPU when no GPU is here), cpu, auto."""
    import nanowhale._C as _C

    device = (device or "auto").lower()
    if device.startswith("cuda"):
        if _C.cuda_available():
            return "cuda"
        log.warning("device %s asked, but no GPU is available (or nanowhale was built without CUDA): using the CPU",
                    device)
        return "cpu"
    if device not in ("cpu", "auto"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return device


def batch_rows(batch_size) -> int:
    if batch_size in (None, "auto") or str(batch_size).startswith("auto"):
        return DEFAULT_BATCH_ROWS
    rows = int(batch_size)
    if rows < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return rows


@register_model("nanowhale")
class NanowhaleLM(LM):
    def __init__(self, ckpt: str | None = None, device: str | None = "auto", batch_size=None, max_batch_size=None,
                 run=None):
        super().__init__()
        if run is None:
            if not ckpt:
                raise ValueError("model_args needs ckpt=RUN (a run directory or a checkpoint)")
            from nanowhale.loaded import load

            run = load(ckpt, device=engine_device(device))
        self.run = run
        self.scorer = ModelScorer(run.model, run.tokenizer, batch_rows=batch_rows(batch_size))

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(r.args) for r in requests]
        ll = self.scorer.loglikelihoods(pairs)
        greedy = self.scorer.greedy(pairs)
        return [(float(a), bool(g)) for a, g in zip(ll, greedy)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [r.args[0] for r in requests]
        return [-d["nats"] for d in self.scorer.rolling(texts)]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        prompts, stops, budgets = [], [], []
        for r in requests:
            context, kwargs = r.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            stops.append((until,) if isinstance(until, str) else tuple(until))
            budgets.append(int(kwargs.pop("max_gen_toks", 256)))
            if kwargs.pop("do_sample", False) or float(kwargs.pop("temperature", 0.0) or 0.0) > 0:
                raise ValueError("the nanowhale harness model decodes greedily: set do_sample: false, temperature: 0")
            prompts.append(context)
        # all of them at once: batch_size generations share each forward, longest prompt first
        return self.scorer.complete_all(prompts, stops, budgets)

    def get_model_info(self) -> dict:
        return {"checkpoint": str(self.run.checkpoint.dir), "step": self.run.step,
                "model_num_parameters": self.run.model.num_params()}


__all__ = ["NanowhaleLM", "batch_rows", "engine_device"]
