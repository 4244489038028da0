"""Runs tasks against a scorer (ModelScorer or a stub): accuracy with a standard error, a chance-centred
aggregate, results as JSON in the run directory.

    results = run_tasks(scorer, ["hellaswag", "piqa"], limit=200, shots=0)

Multiple choice: `acc` takes the choice with the highest summed log-likelihood, `acc_norm` the highest per
UTF-8 byte of the continuation (long endings are not penalised for their length). Generative: `acc` is the
exact-match rate of the extracted answer. Partial scoring: `acc` takes the context after which the shared
continuation is likeliest. Single continuation: `acc` is greedy exact match, `perplexity` exp(-mean
log-likelihood) (as lm-evaluation-harness reports LAMBADA). Rolling documents: `bits_per_byte` (summed nats
over summed bytes, / ln 2), `perplexity` per token, `byte_perplexity` and `word_perplexity` (the harness's
three), no accuracy and no place in the aggregate. The standard error is that of a mean of 0/1 outcomes,
sqrt(p(1-p)/(n-1)). Chance-centred: (acc - chance) / (1 - chance) with the task's primary accuracy and
chance = mean of 1/#choices (0 for generative tasks); the aggregate is its mean over tasks.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path

import numpy as np

from nanowhale.tasks.base import (ContinuationTask, GenerativeTask, MultipleChoiceTask, PartialScoringTask, RollingTask,
                                  Task)


def stderr(outcomes: np.ndarray) -> float:
    n = len(outcomes)
    if n < 2:
        return float("nan")
    p = float(outcomes.mean())
    return math.sqrt(p * (1 - p) / (n - 1))


def _fewshot_prefix(task: Task, pool: list[dict], index: int, shots: int, item: dict) -> str:
    """`shots` solved examples drawn from the pool by a seed of (task, item index), never the item itself."""
    if shots <= 0:
        return ""
    if len(pool) < shots + 1:
        raise ValueError(f"task {task.name}: {shots} shots asked, only {len(pool)} examples to draw from")
    picked = [pool[j] for j in random.Random(f"{task.name}:{index}").sample(range(len(pool)), shots + 1)]
    picked = [x for x in picked if x != item][:shots]
    return "\n\n".join(task.fewshot_text(x) for x in picked) + "\n\n"


def _items(task: Task, limit: int | None) -> list[dict]:
    items = task.load()
    if not items:
        raise ValueError(f"task {task.name}: no items")
    return items[:limit] if limit else items


def run_multiple_choice(scorer, task: MultipleChoiceTask, limit: int | None = None, shots: int = 0) -> dict:
    items = _items(task, limit)
    pool = task.fewshot_items() if shots else []
    rendered, requests, spans = [], [], []
    for i, item in enumerate(items):
        try:
            r = task.render(item)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"task {task.name}, item {i}: {e}") from None
        context = _fewshot_prefix(task, pool, i, shots, item) + r.context
        spans.append((len(requests), len(r.choices)))
        requests += [(context, c) for c in r.choices]
        rendered.append(r)
    t0 = time.perf_counter()
    ll = np.asarray(scorer.loglikelihoods(requests), dtype=np.float64)
    seconds = time.perf_counter() - t0
    acc, acc_norm = np.zeros(len(items)), np.zeros(len(items))
    for k, (r, (start, n)) in enumerate(zip(rendered, spans)):
        scores = ll[start: start + n]
        per_byte = scores / np.asarray([max(len(c.encode("utf-8")), 1) for c in r.choices])
        acc[k] = float(np.argmax(scores) == r.gold)        # ties go to the first choice
        acc_norm[k] = float(np.argmax(per_byte) == r.gold)
    chance = float(np.mean([1.0 / len(r.choices) for r in rendered]))
    return {"kind": task.kind, "n": len(items), "shots": shots, "acc": float(acc.mean()), "acc_stderr": stderr(acc),
            "acc_norm": float(acc_norm.mean()), "acc_norm_stderr": stderr(acc_norm), "chance": chance,
            "primary": task.primary, "seconds": seconds, "items_per_second": len(items) / max(seconds, 1e-9)}


def run_generative(scorer, task: GenerativeTask, limit: int | None = None, shots: int = 0,
                   examples: int = 3) -> dict:
    items = _items(task, limit)
    pool = task.fewshot_items() if shots else []
    prompts, targets = [], []
    for i, item in enumerate(items):
        try:
            prompts.append(_fewshot_prefix(task, pool, i, shots, item) + task.prompt(item))
            targets.append(task.target(item))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"task {task.name}, item {i}: {e}") from None
    t0 = time.perf_counter()
    completions = scorer.complete_all(prompts, [tuple(task.stop)] * len(items), [task.max_new_tokens] * len(items))
    correct = np.zeros(len(items))
    shown = []
    for i, (item, completion, target) in enumerate(zip(items, completions, targets)):
        answer = task.extract(completion)
        correct[i] = float(answer is not None and answer == target)
        if len(shown) < examples:
            shown.append({"prompt": task.prompt(item), "completion": completion, "answer": answer, "target": target})
    seconds = time.perf_counter() - t0
    return {"kind": task.kind, "n": len(items), "shots": shots, "acc": float(correct.mean()),
            "acc_stderr": stderr(correct), "chance": 0.0, "primary": "acc", "seconds": seconds,
            "items_per_second": len(items) / max(seconds, 1e-9), "examples": shown}


def _rendered(task: Task, items: list[dict], pool: list[dict], shots: int) -> list[tuple[str, object]]:
    """(few-shot prefix, rendered item) per item; a rendering error names the task and the item."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append((_fewshot_prefix(task, pool, i, shots, item), task.render(item)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"task {task.name}, item {i}: {e}") from None
    return out


def run_partial(scorer, task: PartialScoringTask, limit: int | None = None, shots: int = 0) -> dict:
    items = _items(task, limit)
    rendered = _rendered(task, items, task.fewshot_items() if shots else [], shots)
    requests = [(prefix + c, r.continuation) for prefix, r in rendered for c in r.contexts]
    t0 = time.perf_counter()
    ll = np.asarray(scorer.loglikelihoods(requests), dtype=np.float64)
    seconds = time.perf_counter() - t0
    acc, start = np.zeros(len(items)), 0
    for k, (_, r) in enumerate(rendered):
        acc[k] = float(np.argmax(ll[start: start + len(r.contexts)]) == r.gold)
        start += len(r.contexts)
    chance = float(np.mean([1.0 / len(r.contexts) for _, r in rendered]))
    return {"kind": task.kind, "n": len(items), "shots": shots, "acc": float(acc.mean()), "acc_stderr": stderr(acc),
            "chance": chance, "primary": "acc", "seconds": seconds, "items_per_second": len(items) / max(seconds, 1e-9)}


def run_continuation(scorer, task: ContinuationTask, limit: int | None = None, shots: int = 0) -> dict:
    items = _items(task, limit)
    rendered = _rendered(task, items, task.fewshot_items() if shots else [], shots)
    requests = [(prefix + r.context, r.continuation) for prefix, r in rendered]
    t0 = time.perf_counter()
    ll = np.asarray(scorer.loglikelihoods(requests), dtype=np.float64)
    greedy = np.asarray(scorer.greedy(requests), dtype=np.float64)
    seconds = time.perf_counter() - t0
    return {"kind": task.kind, "n": len(items), "shots": shots, "acc": float(greedy.mean()),
            "acc_stderr": stderr(greedy), "loglikelihood": float(ll.mean()), "perplexity": math.exp(-float(ll.mean())),
            "chance": 0.0, "primary": "acc", "seconds": seconds, "items_per_second": len(items) / max(seconds, 1e-9)}


def run_rolling(scorer, task: RollingTask, limit: int | None = None, shots: int = 0) -> dict:
    if shots:
        raise ValueError(f"task {task.name}: whole documents are scored without shots")
    items = _items(task, limit)
    texts = [text for _, text in _rendered(task, items, [], 0)]
    t0 = time.perf_counter()
    docs = scorer.rolling(texts)
    seconds = time.perf_counter() - t0
    nats = sum(d["nats"] for d in docs)
    n_tokens, n_bytes = sum(d["tokens"] for d in docs), sum(d["bytes"] for d in docs)
    words = sum(len(re.split(r"\s+", t)) for t in texts)  # as the harness counts words
    return {"kind": task.kind, "n": len(items), "shots": 0, "bits_per_byte": nats / (math.log(2) * n_bytes),
            "perplexity": math.exp(nats / n_tokens), "byte_perplexity": math.exp(nats / n_bytes),
            "word_perplexity": math.exp(nats / words), "tokens": n_tokens, "bytes": n_bytes,
            "primary": "bits_per_byte", "seconds": seconds, "items_per_second": len(items) / max(seconds, 1e-9)}


RUNNERS = ((MultipleChoiceTask, run_multiple_choice), (GenerativeTask, run_generative),
           (PartialScoringTask, run_partial), (ContinuationTask, run_continuation), (RollingTask, run_rolling))


def run_task(scorer, task: Task, limit: int | None = None, shots: int = 0) -> dict:
    for cls, runner in RUNNERS:
        if isinstance(task, cls):
            return runner(scorer, task, limit, shots)
    raise ValueError(f"task {task.name}: not one of the task kinds {[cls.__name__ for cls, _ in RUNNERS]}")


def centred(result: dict) -> float:
    acc, chance = result[result["primary"]], result["chance"]
    return (acc - chance) / (1 - chance)


def aggregate(results: dict[str, dict]) -> float | None:
    """Mean chance-centred primary accuracy over the tasks that measure an accuracy (None with none)."""
    scored = [centred(r) for r in results.values() if "chance" in r]
    return float(np.mean(scored)) if scored else None


def run_tasks(scorer, tasks: list[Task], limit: int | None = None, shots: int = 0, log=None) -> dict:
    """{'tasks': {name: result}, 'aggregate': float}; `log(name, result)` is called after each task."""
    results = {}
    for task in tasks:
        results[task.name] = run_task(scorer, task, limit, shots)
        if log:
            log(task.name, results[task.name])
    return {"tasks": results, "aggregate": aggregate(results)}


RESULTS_FILE = "eval_tasks.json"


def save_results(run_dir: str | Path, checkpoint: str, step: int, results: dict) -> Path:
    """Merges into RUN/eval_tasks.json, keyed by checkpoint step: a later run of a task replaces its entry,
    and the aggregate is recomputed over every task evaluated at that step. Other keys of `results` (val_bpb)
    are stored beside the tasks."""
    path = Path(run_dir) / RESULTS_FILE
    data = json.loads(path.read_text()) if path.exists() else {"checkpoints": {}}
    entry = data["checkpoints"].setdefault(str(step), {"checkpoint": checkpoint, "step": step, "tasks": {}})
    entry["tasks"].update(results.get("tasks", {}))
    entry.update({k: v for k, v in results.items() if k not in ("tasks", "aggregate")})
    entry["aggregate"] = aggregate(entry["tasks"])
    entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def format_results(results: dict) -> str:
    lines = []
    for name, r in results["tasks"].items():
        if r.get("kind") == "rolling":
            lines.append(f"{name}: bits_per_byte {r['bits_per_byte']:.4f}  perplexity {r['perplexity']:.3f}  "
                         f"word_perplexity {r['word_perplexity']:.3f}  (n={r['n']}, {r['tokens']} tokens)")
            continue
        s = f"{name}: acc {r['acc']:.4f} ± {r['acc_stderr']:.4f}"
        if "acc_norm" in r:
            s += f"  acc_norm {r['acc_norm']:.4f} ± {r['acc_norm_stderr']:.4f}"
        if "perplexity" in r:
            s += f"  perplexity {r['perplexity']:.3f}"
        lines.append(s + f"  (n={r['n']}, shots={r['shots']}, chance {r['chance']:.3f}, "
                     f"{r['items_per_second']:.1f} items/s)")
    if results.get("aggregate") is not None:
        lines.append(f"aggregate (chance-centred): {results['aggregate']:.4f}")
    return "\n".join(lines)


__all__ = ["RESULTS_FILE", "aggregate", "centred", "format_results", "run_task", "run_tasks", "save_results", "stderr"]
