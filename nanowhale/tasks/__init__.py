"""Evaluation tasks: `nanowhale eval --task hellaswag,arc-easy,...` (see base.py for how to add one).

    tasks = make_tasks("hellaswag,piqa,jsonl:mine.jsonl?gold=label")
    results = run_tasks(ModelScorer(model, tokenizer), tasks, limit=100)
"""

from __future__ import annotations

from nanowhale.tasks import arc, gsm8k, hellaswag, mmlu, piqa  # noqa: F401  (register the built-in tasks)
from nanowhale.tasks.base import GenerativeTask, MCItem, MultipleChoiceTask, Task, register, registered
from nanowhale.tasks.jsonl import JsonlMultipleChoice, jsonl_task
from nanowhale.tasks.runner import aggregate, format_results, run_task, run_tasks, save_results
from nanowhale.tasks.scoring import ModelScorer, continuation_logprobs

DEFAULT_TASKS = ("hellaswag", "arc-easy", "arc-challenge", "mmlu", "piqa", "gsm8k")


def make_task(spec: str) -> Task:
    """A registered task by name, or a JSONL file: 'PATH.jsonl[?kind=..&FIELD=..]' or 'jsonl:PATH[?...]'."""
    spec = spec.strip()
    if spec.startswith("jsonl:"):
        return jsonl_task(spec[len("jsonl:"):])
    if spec.partition("?")[0].endswith((".jsonl", ".jsonl.gz")):
        return jsonl_task(spec)
    tasks = registered()
    if spec not in tasks:
        raise ValueError(f"unknown task {spec!r}; known: {', '.join(sorted(tasks))}, or a FILE.jsonl")
    return tasks[spec]()


def make_tasks(specs: str) -> list[Task]:
    """Comma-separated task specs ('all': every built-in task)."""
    names = [s for s in specs.split(",") if s.strip()]
    if names == ["all"]:
        names = list(DEFAULT_TASKS)
    if not names:
        raise ValueError("no task given")
    return [make_task(s) for s in names]


__all__ = ["DEFAULT_TASKS", "GenerativeTask", "JsonlMultipleChoice", "MCItem", "ModelScorer", "MultipleChoiceTask",
           "Task", "aggregate", "continuation_logprobs", "format_results", "make_task", "make_tasks", "register",
           "run_task", "run_tasks", "save_results"]
