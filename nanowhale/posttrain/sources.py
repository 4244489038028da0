"""Conversation sources for `nanowhale sft --data SPEC ...`.

A SPEC is a file or a generated task:
    chat.jsonl[.gz]            OpenAI-style {"messages": [...]} per line
    hh-rlhf pairs .jsonl[.gz]  {"chosen", "rejected"} per line: the chosen dialogues
    gsm8k .jsonl[.gz]          {"question", "answer"} per line (calculator annotations dropped)
    task:NAME[:SIZE][@N]       N (default 2000) conversations of a task (tasks.py), e.g. task:arith:5@500
The file format is recognised from the keys of its first record.
"""

from __future__ import annotations

from nanowhale.conversation import json_lines, openai_messages, parse_hh_dialogue
from nanowhale.posttrain.tasks import gsm8k_conversation, make_task


def load_conversations(spec: str, seed: int = 0) -> list[list[dict]]:
    if spec.startswith("task:"):  # task:NAME[:SIZE][@COUNT]
        name, _, count = spec[5:].partition("@")
        if count and not count.isdigit():
            raise ValueError(f"--data {spec!r}: expected task:NAME[:SIZE][@COUNT]")
        task = make_task(name, seed=seed, split="train")
        n = min(int(count) if count else 2000, len(task))
        return [task.conversation(i) for i in range(n)]
    out: list[list[dict]] = []
    kind = None
    for n, obj in json_lines(spec):
        where = f"{spec}:{n}"
        if kind is None:
            keys = set(obj) if isinstance(obj, dict) else set()
            kind = "messages" if "messages" in keys else "hh" if "chosen" in keys else \
                "gsm8k" if {"question", "answer"} <= keys else None
            if kind is None:
                raise ValueError(f"{where}: unknown conversation format (expected 'messages', 'chosen'/'rejected' "
                                 f"or 'question'/'answer' keys, got {sorted(keys)})")
        if kind == "messages":
            out.append(openai_messages(obj, where=where))
        elif kind == "hh":
            if not isinstance(obj, dict) or not isinstance(obj.get("chosen"), str):
                raise ValueError(f"{where}: expected an object with a string 'chosen'")
            out.append(parse_hh_dialogue(obj["chosen"], where=where))
        else:
            out.append(gsm8k_conversation(obj, where=where))
    if not out:
        raise ValueError(f"{spec}: no conversations")
    return out


__all__ = ["load_conversations"]
