"""`nanowhale eval --ckpt RUN --harness TASKS [--harness-include DIR]`: lm-evaluation-harness tasks on a
checkpoint through the `nanowhale` harness model, printed as the harness prints them and merged into
RUN/eval_harness.json (keyed by checkpoint step; `nanowhale report` reads it).

TASKS: the built-in names (hellaswag, arc-easy, arc-challenge, mmlu, piqa, gsm8k) run their offline
definitions (nanowhale/lm_eval/tasks/); other names are the harness's, or tasks in --harness-include DIR.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from nanowhale.tasks.command import HARNESS_RESULTS_FILE, run_dir_of


def _metrics(result: dict) -> dict:
    """{'acc,none': x, 'acc_stderr,none': s, 'alias': ..} -> {'acc': x, 'acc_stderr': s} (the default filter's)."""
    out = {}
    for key, value in result.items():
        name, _, filt = key.partition(",")
        if filt in ("none", "") and isinstance(value, (int, float)) and name != "alias":
            out[name] = value
    return out


def save_harness_results(run_dir: str | Path, checkpoint: str, step: int, entry: dict) -> Path:
    path = Path(run_dir) / HARNESS_RESULTS_FILE
    data = json.loads(path.read_text()) if path.exists() else {"checkpoints": {}}
    saved = data["checkpoints"].setdefault(str(step), {"checkpoint": checkpoint, "step": step, "tasks": {}})
    saved["tasks"].update(entry["tasks"])
    saved.update({k: v for k, v in entry.items() if k != "tasks"})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def eval_harness(ckpt: str, tasks: str, include: str | None = None, limit: int | None = None, shots: int = 0,
                 device: str = "auto", batch_rows: int = 16, out=print) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    from nanowhale.lm_eval import NanowhaleLM
    from nanowhale.lm_eval.task_dir import harness_task_names, task_dir

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if shots < 0:
        raise ValueError(f"--shots must be >= 0, got {shots}")
    names = harness_task_names(tasks)
    paths = [str(task_dir())]
    if include:
        if not Path(include).is_dir():
            raise ValueError(f"--harness-include {include} is not a directory")
        paths.append(str(Path(include).resolve()))
    # lm-eval's own task index takes seconds to build: only when a name is not one of ours or the user's
    manager = TaskManager(include_path=paths, include_defaults=False)
    if not all(manager.match_tasks([n]) for n in names):
        manager = TaskManager(include_path=paths)
    unknown = [n for n in names if not manager.match_tasks([n])]
    if unknown:  # before the model loads
        raise ValueError(f"unknown harness task(s) {unknown}; the built-in sets: hellaswag, arc-easy, arc-challenge, "
                         "mmlu, piqa, gsm8k; others from lm-eval or --harness-include DIR")
    lm = NanowhaleLM(ckpt=ckpt, device=device, batch_size=batch_rows)
    t0 = time.perf_counter()
    res = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit,
                                  num_fewshot=shots or None)
    seconds = time.perf_counter() - t0
    out(make_table(res))
    entry = {"lm_eval_version": lm_eval.__version__, "limit": limit, "shots": shots, "seconds": seconds,
             "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tasks": {}}
    for name, result in res["results"].items():
        n = res.get("n-samples", {}).get(name, {}).get("effective")
        entry["tasks"][name] = {"n": n, "shots": res.get("n-shot", {}).get(name, shots), **_metrics(result)}
    run_dir = run_dir_of(lm.run.checkpoint.dir)
    path = save_harness_results(run_dir, str(lm.run.checkpoint.dir), lm.run.step, entry)
    out(f"results: {path}")
    return entry


__all__ = ["eval_harness", "save_harness_results"]
