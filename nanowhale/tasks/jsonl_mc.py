"""A user's own multiple-choice set, no code needed: a JSONL(.gz) file with a context, a list of choices and
the gold index per line. On the command line:

    nanowhale eval --ckpt RUN --task jsonl:my_set.jsonl
    nanowhale eval --ckpt RUN --task "jsonl:my_set.jsonl?context=question&choices=options&gold=answer&sep=%20"

Field names default to context / choices / gold; `sep` (URL-encoded) goes between the context and each
choice (default a space). The gold field may be an index or the text of the right choice.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from nanowhale.tasks.base import MCItem, MultipleChoiceTask, read_jsonl

OPTIONS = ("context", "choices", "gold", "sep")


class JsonlMultipleChoice(MultipleChoiceTask):
    def __init__(self, path: str | Path, context: str = "context", choices: str = "choices", gold: str = "gold",
                 sep: str = " "):
        self.path = Path(path)
        self.name = f"jsonl:{self.path.name}"
        self.fields = {"context": context, "choices": choices, "gold": gold}
        self.sep = sep

    @classmethod
    def from_spec(cls, spec: str) -> JsonlMultipleChoice:
        """From 'PATH' or 'PATH?context=..&choices=..&gold=..&sep=..'."""
        path, _, query = spec.partition("?")
        opts = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise ValueError(f"task jsonl:{spec}: unknown option(s) {unknown}; known: {list(OPTIONS)}")
        return cls(path, **opts)

    def load(self):
        return read_jsonl(self.path)

    def render(self, item):
        where = f"{self.path}"
        missing = [f for f in self.fields.values() if f not in item]
        if missing:
            raise ValueError(f"{where}: an item lacks field(s) {missing} (has {sorted(item)})")
        context, choices, gold = (item[self.fields[k]] for k in ("context", "choices", "gold"))
        texts = isinstance(choices, list) and all(isinstance(c, str) for c in choices)
        if not isinstance(context, str) or not texts:
            raise ValueError(f"{where}: '{self.fields['context']}' must be a string and "
                             f"'{self.fields['choices']}' a list of strings")
        if isinstance(gold, str):
            if gold not in choices:
                raise ValueError(f"{where}: gold answer {gold!r} is not one of the choices")
            gold = choices.index(gold)
        elif not isinstance(gold, int) or isinstance(gold, bool):
            raise ValueError(f"{where}: '{self.fields['gold']}' must be an index or a choice's text, got {gold!r}")
        return MCItem(context, [self.sep + c for c in choices], gold)
