"""A user's own evaluation set, no code needed: a JSONL(.gz) file, one item per line, in one of the four
request kinds of lm-evaluation-harness, chosen by the fields present (or `?kind=`):

    multiple_choice  {"context": "...", "choices": ["...", "..."], "gold": 1}      acc, acc_norm
    partial          {"context_options": ["... so Sarah", "... so Maria"],
                      "continuation": "always got the easier cases.", "gold": 1}  acc
    continuation     {"context": "...", "continuation": "word"}                    acc (greedy exact match),
                                                                                  perplexity
    rolling          {"text": "a whole document"}                                  bits_per_byte, perplexity

On the command line:

    nanowhale eval --ckpt RUN --task my_set.jsonl            # or jsonl:my_set.jsonl
    nanowhale eval --ckpt RUN --task "my_set.jsonl?kind=multiple_choice&context=question&choices=options&sep=%20"

Options: `kind`, `sep` (URL-encoded, between a context and its continuation; default a space) and a new name
for any field (context, choices, gold, context_options, continuation, text). `gold` may be an index or the
text of the right choice (or context). Every item is checked when the file loads: a missing or mistyped
field is a ValueError naming the file, the line and the field.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from nanowhale.tasks.base import (ContinuationItem, ContinuationTask, MCItem, MultipleChoiceTask, PartialItem,
                                  PartialScoringTask, RollingTask, read_jsonl_numbered)

FIELDS = ("context", "choices", "gold", "context_options", "continuation", "text")
OPTIONS = ("kind",  "sep") + FIELDS
# The fields each kind reads, and (in this order) the field whose presence selects the kind.
KIND_FIELDS = {"multiple_choice": ("context", "choices", "gold"), "partial": ("context_options", "continuation", "gold"),
               "continuation": ("context", "continuation"), "rolling": ("text",)}
SELECTED_BY = (("choices", "multiple_choice"), ("context_options", "partial"), ("text", "rolling"),
               ("continuation", "continuation"))


def _is_text(v) -> bool:
    return isinstance(v, str)


def _is_texts(v) -> bool:
    return isinstance(v, list) and len(v) >= 2 and all(isinstance(c, str) for c in v)


def _is_gold(v) -> bool:
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


CHECKS = {"context": (_is_text, "a string"), "continuation": (_is_text, "a string"), "text": (_is_text, "a string"),
          "choices": (_is_texts, "a list of at least 2 strings"),
          "context_options": (_is_texts, "a list of at least 2 strings"),
          "gold": (_is_gold, "an index or the text of the right option")}


def _gold_index(gold, options: list[str], where: str, field: str) -> int:
    if isinstance(gold, str):
        if gold not in options:
            raise ValueError(f"{where}: field '{field}' {gold!r} is not one of the options")
        return options.index(gold)
    if not 0 <= gold < len(options):
        raise ValueError(f"{where}: field '{field}' {gold} is outside the {len(options)} options")
    return gold


class _JsonlFile:
    """Reading and checking the file; each kind's class adds `render`."""

    def __init__(self, path: str | Path, kind: str, fields: dict[str, str] | None = None, sep: str = " "):
        self.path = Path(path)
        self.name = f"jsonl:{self.path.name}"
        self.fields = {f: f for f in FIELDS} | (fields or {})
        self.sep = sep
        self.file_kind = kind

    def _get(self, item: dict, field: str, where: str):
        name = self.fields[field]
        if name not in item:
            raise ValueError(f"{where}: missing field '{name}' for a {self.file_kind} item (has {sorted(item)})")
        ok, what = CHECKS[field]
        if not ok(item[name]):
            raise ValueError(f"{where}: field '{name}' must be {what}, got {type(item[name]).__name__} "
                             f"{str(item[name])[:60]!r}")
        return item[name]

    def load(self) -> list[dict]:
        items = []
        for line, item in read_jsonl_numbered(self.path):
            self.render(item, f"{self.path}:{line}")  # every field checked before any scoring
            items.append(item)
        if not items:
            raise ValueError(f"{self.path}: no items")
        return items


class JsonlMultipleChoice(_JsonlFile, MultipleChoiceTask):
    def __init__(self, path, fields=None, sep=" "):
        super().__init__(path, "multiple_choice", fields, sep)

    def render(self, item, where=None):
        where = where or str(self.path)
        context, choices = self._get(item, "context", where), self._get(item, "choices", where)
        gold = _gold_index(self._get(item, "gold", where), choices, where, self.fields["gold"])
        return MCItem(context, [self.sep + c for c in choices], gold)


class JsonlPartial(_JsonlFile, PartialScoringTask):
    def __init__(self, path, fields=None, sep=" "):
        super().__init__(path, "partial", fields, sep)

    def render(self, item, where=None):
        where = where or str(self.path)
        contexts = self._get(item, "context_options", where)
        continuation = self._get(item, "continuation", where)
        gold = _gold_index(self._get(item, "gold", where), contexts, where, self.fields["gold"])
        return PartialItem(list(contexts), self.sep + continuation, gold)


class JsonlContinuation(_JsonlFile, ContinuationTask):
    def __init__(self, path, fields=None, sep=" "):
        super().__init__(path, "continuation", fields, sep)

    def render(self, item, where=None):
        where = where or str(self.path)
        return ContinuationItem(self._get(item, "context", where), self.sep + self._get(item, "continuation", where))


class JsonlRolling(_JsonlFile, RollingTask):
    def __init__(self, path, fields=None, sep=" "):
        super().__init__(path, "rolling", fields, sep)

    def render(self, item, where=None):
        text = self._get(item, "text", where or str(self.path))
        if not text:
            raise ValueError(f"{where or self.path}: field '{self.fields['text']}' is empty")
        return text


CLASSES = {"multiple_choice": JsonlMultipleChoice, "partial": JsonlPartial, "continuation": JsonlContinuation,
           "rolling": JsonlRolling}


def _detect_kind(path: Path, fields: dict[str, str]) -> str:
    """The kind the first item's fields select."""
    rows = read_jsonl_numbered(path)
    if not rows:
        raise ValueError(f"{path}: no items")
    line, item = rows[0]
    for field, kind in SELECTED_BY:
        if fields.get(field, field) in item:
            return kind
    raise ValueError(f"{path}:{line}: cannot tell the task kind from the fields {sorted(item)}: give 'choices' "
                     "(multiple choice), 'context_options' (partial scoring), 'continuation' (single continuation) "
                     "or 'text' (rolling), or ?kind=")


def jsonl_task(spec: str):
    """From 'PATH' or 'PATH?kind=..&sep=..&FIELD=NAME..'."""
    path, _, query = spec.partition("?")
    opts = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"task {spec}: unknown option(s) {unknown}; known: {list(OPTIONS)}")
    kind, sep = opts.pop("kind", None), opts.pop("sep", " ")
    if kind is not None and kind not in CLASSES:
        raise ValueError(f"task {spec}: kind must be one of {list(CLASSES)}, got {kind!r}")
    if not Path(path).exists():
        raise ValueError(f"task file {path} does not exist")
    return CLASSES[kind or _detect_kind(Path(path), opts)](path, opts, sep)


__all__ = ["CLASSES", "JsonlContinuation", "JsonlMultipleChoice", "JsonlPartial", "JsonlRolling", "jsonl_task"]
