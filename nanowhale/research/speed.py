"""The throughput probe of paired speed research: the median training step's tokens/s of one tree's code.

Runs in its own process, importing the nanowhale of the tree it measures (worker.BOOTSTRAP with
NANOWHALE_RESEARCH_MAIN=nanowhale.research.speed): `python -c BOOTSTRAP SPEC.json RESULT.json`. The spec is
a training spec (worker.resolve_spec) plus `probe_steps`; the model, optimizer, micro-batch, accumulation and
threads come from the config it resolves. A step is what the trainer does per optimizer step:
`accumulation` forward_backward calls on seeded random tokens, Optimizer.step, the loss sums' read, zero_grad,
in the config's precision and with its CUDA graphs. No data, no evaluation: only the step's code is timed.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

WARMUP_STEPS = 2  # first steps allocate arenas and warm caches: excluded from the median


def probe(cfg, steps: int, seed: int = 0) -> dict:
    """Times `steps` optimizer steps of cfg's model; the median of the steps after WARMUP_STEPS."""
    import numpy as np

    import nanowhale._C as _C
    from nanowhale.trainer import choose_cuda_graphs, choose_device, choose_precision

    if steps <= WARMUP_STEPS:
        raise ValueError(f"probe_steps must be > {WARMUP_STEPS} (the first {WARMUP_STEPS} are warm-up), got {steps}")
    if cfg.train.threads:
        _C.set_num_threads(cfg.train.threads)
    mcfg = cfg.model_config()
    device = choose_device(cfg.train.device)
    model = _C.Model(mcfg, seed=seed, device=device)
    model.precision = choose_precision(cfg.train.precision, device)
    model.cuda_graphs = choose_cuda_graphs(cfg.train.cuda_graph, device)
    opt = _C.Optimizer(model, cfg.optimizer_config())
    T, B, accum = mcfg.seq_len, cfg.train.micro_batch, cfg.accumulation()
    rng = np.random.default_rng(seed)
    batches = rng.integers(0, mcfg.vocab_size, size=(accum, B, T + 1), dtype=np.int32)  # [accum, B, T+1]
    seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        for batch in batches:
            model.forward_backward(batch[:, :-1], batch[:, 1:], grad_scale=1.0 / accum, defer_loss=True)
        opt.step()  # its read of the gradient norm is the step's one wait for the device
        model.take_loss_sums()
        model.zero_grad()
        seconds.append(time.perf_counter() - t0)
    median = statistics.median(seconds[WARMUP_STEPS:])
    return {"tokens_per_second": accum * B * T / median, "step_seconds": seconds, "status": "done"}


def main(argv: list[str]) -> int:
    from nanowhale.research.worker import resolve_spec

    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    result = probe(resolve_spec(spec), int(spec["probe_steps"]), int(spec.get("seed", 0)))
    Path(out_path).write_text(json.dumps(result))
    print(f"{result['tokens_per_second']:.1f} tokens/s (median step of {len(result['step_seconds'])})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
