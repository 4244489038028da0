"""What an evaluation task is: a small class that loads items, renders them to text and says how to score.

Five kinds (the request kinds of lm-evaluation-harness), all scored by `nanowhale.tasks.runner`:

    MultipleChoiceTask   render(item) -> MCItem(context, choices, gold). Each continuation " " + choice is
                         scored by its log-likelihood after the context (summed, and per UTF-8 byte), the
                         highest wins: `acc` (summed) and `acc_norm` (per byte) are both reported.
    GenerativeTask       prompt(item) -> text the model continues (greedy); extract(completion) and
                         target(item) -> the answers compared by exact match.
    PartialScoringTask   render(item) -> PartialItem(contexts, continuation, gold). The shared continuation is
                         scored after each context; the context under which it is likeliest wins (`acc`).
    ContinuationTask     render(item) -> ContinuationItem(context, continuation): `acc` is greedy exact match
                         (every continuation token is the model's argmax), beside its log-likelihood.
    RollingTask          render(item) -> a whole document, scored as `nanowhale eval FILE` scores a file:
                         bits per byte and perplexity (no accuracy).

A new task is one file: subclass one of these, set `name`, implement `load` and `render` (or `prompt`,
`target`, `extract`), and register it with `@register` (nanowhale/tasks/__init__.py imports the built-ins).
Few-shot examples (`--shots K`) are drawn from `fewshot_items()` (default: the task's other items),
deterministically from the item's index, rendered with their gold answer and joined by blank lines.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path


def shared_data_dir() -> Path:
    """Where task data lives: $NANOWHALE_SHARED_DATA, else ../shared/data beside the current directory or the
    checkout (the project's layout)."""
    env = os.environ.get("NANOWHALE_SHARED_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


def read_jsonl(path: str | Path) -> list[dict]:
    """JSON objects, one per line, from a .jsonl or .jsonl.gz file; ValueError naming the file and line."""
    return [obj for _, obj in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, JSON object) for each non-blank line, as read_jsonl reads them."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"task data {path} does not exist (set NANOWHALE_SHARED_DATA to the folder holding "
                         "hellaswag/, arc-easy/, ...)")
    opener = gzip.open if path.suffix == ".gz" else open
    items = []
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
            items.append((i, obj))
    return items


@dataclass
class MCItem:
    context: str
    choices: list[str]  # continuations as scored, each starting with its separator (usually a space)
    gold: int

    def __post_init__(self):
        if len(self.choices) < 2:
            raise ValueError(f"a multiple-choice item needs at least 2 choices, got {len(self.choices)}")
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(f"gold index {self.gold} is outside the {len(self.choices)} choices")


@dataclass
class PartialItem:
    contexts: list[str]
    continuation: str  # as scored, starting with its separator
    gold: int

    def __post_init__(self):
        if len(self.contexts) < 2:
            raise ValueError(f"a partial-scoring item needs at least 2 contexts, got {len(self.contexts)}")
        if not 0 <= self.gold < len(self.contexts):
            raise ValueError(f"gold index {self.gold} is outside the {len(self.contexts)} contexts")


@dataclass
class ContinuationItem:
    context: str
    continuation: str  # as scored, starting with its separator


class Task:
    name = ""
    kind = ""
    # Which accuracy the aggregate and the report use.
    primary = "acc"

    def load(self) -> list[dict]:
        raise NotImplementedError

    def fewshot_items(self) -> list[dict]:
        return self.load()


class MultipleChoiceTask(Task):
    kind = "multiple_choice"

    def render(self, item: dict) -> MCItem:
        raise NotImplementedError

    def fewshot_text(self, item: dict) -> str:
        """A solved example: the context followed by its gold continuation."""
        r = self.render(item)
        return r.context + r.choices[r.gold]


class GenerativeTask(Task):
    kind = "generative"
    stop = ("\n\n",)  # the completion ends at the first of these
    max_new_tokens = 256

    def prompt(self, item: dict) -> str:
        raise NotImplementedError

    def target(self, item: dict) -> str:
        raise NotImplementedError

    def extract(self, completion: str) -> str | None:
        return completion.strip()

    def fewshot_text(self, item: dict) -> str:
        raise NotImplementedError


class PartialScoringTask(Task):
    kind = "partial"

    def render(self, item: dict) -> PartialItem:
        raise NotImplementedError

    def fewshot_text(self, item: dict) -> str:
        r = self.render(item)
        return r.contexts[r.gold] + r.continuation


class ContinuationTask(Task):
    kind = "continuation"

    def render(self, item: dict) -> ContinuationItem:
        raise NotImplementedError

    def fewshot_text(self, item: dict) -> str:
        r = self.render(item)
        return r.context + r.continuation


class RollingTask(Task):
    kind = "rolling"
    primary = "bits_per_byte"

    def render(self, item: dict) -> str:
        raise NotImplementedError


_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    if not cls.name:
        raise ValueError(f"task class {cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def registered() -> dict[str, type[Task]]:
    return dict(_REGISTRY)


__all__ = ["ContinuationItem", "ContinuationTask", "GenerativeTask", "MCItem", "MultipleChoiceTask", "PartialItem",
           "PartialScoringTask", "RollingTask", "Task", "read_jsonl", "read_jsonl_numbered", "register", "registered",
           "shared_data_dir"]
