"""One training run of an experiment, in its own process (the harness runs it under a timeout and a
memory limit): `python -c BOOTSTRAP SPEC.json RESULT.json`.

The spec names the config layers (the rung's preset and overrides, the agent's experiment config, the
harness's forced keys), the seed and the budget; the result is the trainer's summary plus what the harness
scores: the metric, throughput, training and evaluation seconds, peak memory and, for promotion runs,
val_bpb on the held-out validation slice (the `eval_tokens` rows after the slice the loop scores).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

# Imports nanowhale from the research repository itself. An in-place module (nanowhale/_C*.so in the repo)
# wins over an editable install's import hook, so a test repo runs its own code.
BOOTSTRAP = """
import glob, os, sys
repo = os.environ["NANOWHALE_RESEARCH_REPO"]
if glob.glob(os.path.join(repo, "nanowhale", "_C*.so")):
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "ScikitBuildRedirectingFinder"]
    sys.path.insert(0, repo)
import nanowhale
if not os.path.realpath(nanowhale.__file__).startswith(os.path.realpath(repo) + os.sep):
    raise SystemExit(f"nanowhale is imported from {nanowhale.__file__}, not from the research repository {repo}; "
                     "in the repository run: pip install --no-build-isolation -Cbuild-dir=build/dev -e .")
import importlib
sys.exit(importlib.import_module(os.environ.get("NANOWHALE_RESEARCH_MAIN", "nanowhale.research.worker")).main(sys.argv[1:]))
"""


def budget_overrides(cfg, kind: str, amount: float) -> list[str]:
    """train.steps (flops, tokens) or train.time_budget (time) for a resolved config."""
    if kind == "time":
        return [f"train.time_budget={float(amount)}"]
    tokens = amount if kind == "tokens" else amount / cfg.model_config().flops_per_token()
    return [f"train.steps={max(1, round(tokens / cfg.train.batch_tokens))}"]


def resolve_spec(spec: dict):
    """The RunConfig a spec describes: preset -> rung overrides -> experiment config (spec["experiment"], a
    dict, or the TOML file spec["experiment_config"]) -> forced keys -> budget."""
    from nanowhale.config import load_toml, resolve

    if "experiment" in spec:  # a config given as a dict (the harness's own resolutions, carried configs)
        exp, where = spec["experiment"], "the experiment config"
    else:
        where = spec.get("experiment_config") or "the experiment config"
        exp = load_toml(spec["experiment_config"]) if spec.get("experiment_config") else {}
    if "preset" in exp:
        raise ValueError(f"{where}: `preset` is chosen by the harness (the scale); remove it")
    overrides = list(spec.get("rung_overrides", []))
    cfg = resolve(spec["preset"], [], overrides)
    from nanowhale.config import merge, parse_override, validate

    merge(cfg, exp)
    for o in spec.get("forced", []):
        merge(cfg, parse_override(o))
    for o in budget_overrides(cfg, spec["budget_kind"], spec["budget_amount"]):
        merge(cfg, parse_override(o))
    validate(cfg)
    return cfg


def pretrain(spec: dict) -> dict:
    """The default entry: nanowhale's trainer on the spec's config; the summary dict."""
    from nanowhale.trainer import train

    cfg = resolve_spec(spec)
    result = train(cfg, progress=False)
    result.pop("losses", None)
    result.pop("samples", None)
    run_dir = Path(result["run_dir"])
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    result["eval_seconds"] = sum(r.get("seconds", 0.0) for r in records if r.get("event") == "eval")
    result["step_tokens_per_second"] = step_throughput(records, cfg.train.batch_tokens, cfg.train.clock_skip_steps)
    if spec.get("heldout") and result["status"] == "done":
        t0 = time.perf_counter()
        result["heldout_val_bpb"] = heldout_val_bpb(run_dir, cfg.eval.tokens, cfg.eval.batch_size)
        result["eval_seconds"] += time.perf_counter() - t0
    return result


def step_throughput(records: list[dict], batch_tokens: int, skip: int) -> float:
    """Tokens per second of the median training step, the first `skip` steps (warm-up) excluded: the speed
    of the code, robust to the few steps a busy neighbour preempts (a mean over a short run is not)."""
    steps = [r["step_seconds"] for r in records if "step_seconds" in r and "event" not in r]
    steps = steps[min(skip, len(steps) - 1):] if steps else []
    if not steps:
        return 0.0
    secs = sorted(steps)
    mid = len(secs) // 2
    median = secs[mid] if len(secs) % 2 else 0.5 * (secs[mid - 1] + secs[mid])
    return batch_tokens / median


def heldout_val_bpb(run_dir: Path, tokens: int, batch_size: int) -> float:
    """val_bpb of the validation rows after the first tokens // T (the loop's slice), up to twice as many:
    from the protected evaluation's sums over 2N and N rows, so no evaluation code is duplicated."""
    from nanowhale.data.shards import shard_paths
    from nanowhale.evaluate import val_bpb
    from nanowhale.loaded import load

    run = load(str(run_dir))
    paths = shard_paths(run.checkpoint.meta["data_dir"], "val")
    first = val_bpb(run.model, run.tokenizer, paths, tokens, batch_size)
    both = val_bpb(run.model, run.tokenizer, paths, 2 * tokens, batch_size)
    if both["rows"] <= first["rows"]:
        raise ValueError(f"the validation split has no rows beyond the first {first['rows']}: no held-out slice")
    nats = lambda e: e["val_bpb"] * math.log(2) * e["bytes"]  # noqa: E731
    return (nats(both) - nats(first)) / (math.log(2) * (both["bytes"] - first["bytes"]))


def _entry(name: str):
    module, _, func = name.partition(":")
    import importlib

    return getattr(importlib.import_module(module), func)


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    result = _entry(spec.get("entry", "nanowhale.research.worker:pretrain"))(spec)
    result["worker_seconds"] = time.perf_counter() - t0
    result["worker_cpu_seconds"] = time.process_time() - cpu0
    tmp = Path(out_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(out_path)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}), flush=True)
    return 0 if result.get("status") == "done" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
