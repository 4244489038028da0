"""Tasks with verifiable rewards for `nanowhale rl` (and, as conversations, for `nanowhale sft`).

A task yields (prompt messages, gold answer) pairs and scores a completion exactly:

    arith[:N]  "What is 7+12?" -> "19"        addition and subtraction of operands 0..N-1 (N = 20)
    copy[:N]   "Copy: qzkm" -> "qzkm"          a random lowercase string of 3..N letters (N = 6)
    sort[:N]   "Sort: 5 2 9 1" -> "1 2 5 9"    3..N digits, ascending (N = 5)
    gsm8k      grade-school maths (../shared/data/gsm8k); reward: the final number equals the gold one

The size N sets the difficulty (`--task arith:5` is a warm-up the micro test model learns in seconds).

Synthetic tasks are generated from a seed (problem i of seed s is a pure function of (s, i)), so train
and held-out problems never depend on run order; `split="val"` draws from a disjoint seed stream.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from nanowhale.tasks.base import read_jsonl, shared_data_dir
from nanowhale.tasks.gsm8k import final_number

_CALC = re.compile(r"<<[^>]*>>")


def _rng(seed: int, split: str, i: int) -> random.Random:
    return random.Random(f"{seed}:{split}:{i}")


class Task:
    """A task: `problem(i)` -> (messages, answer); `reward(text, answer)` -> 1.0 or 0.0."""

    name = ""
    default_size = 0
    min_size = 0
    answer_tokens = 16              # enough for any gold answer (scoring generates at most this many)

    def __init__(self, seed: int = 0, split: str = "train", size: int | None = None):
        if split not in ("train", "val", "test"):
            raise ValueError(f"task split must be train, val or test, got {split!r}")
        self.seed, self.split = seed, split
        self.size = self.default_size if size is None else size
        if self.size < self.min_size:
            raise ValueError(f"task {self.name}: size must be >= {self.min_size}, got {self.size}")

    def __len__(self) -> int:  # synthetic tasks are unbounded
        return 1 << 62

    def problem(self, i: int) -> tuple[list[dict], str]:
        raise NotImplementedError

    def reward(self, completion: str, answer: str) -> float:
        return float(completion.strip() == answer)

    def conversation(self, i: int) -> list[dict]:
        """Problem i with its gold answer as the assistant turn (SFT data)."""
        messages, answer = self.problem(i)
        return messages + [{"role": "assistant", "content": answer}]


class Arith(Task):
    name, default_size, min_size = "arith", 20, 1

    def problem(self, i):
        r = _rng(self.seed, self.split, i)
        a, b = r.randrange(self.size), r.randrange(self.size)
        if r.random() < 0.5:
            return [{"role": "user", "content": f"What is {a}+{b}?"}], str(a + b)
        a, b = max(a, b), min(a, b)
        return [{"role": "user", "content": f"What is {a}-{b}?"}], str(a - b)


class Copy(Task):
    name, default_size, min_size = "copy", 6, 1

    def problem(self, i):
        r = _rng(self.seed, self.split, i)
        s = "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(min(3, self.size), self.size)))
        return [{"role": "user", "content": f"Copy: {s}"}], s


class Sort(Task):
    name, default_size, min_size = "sort", 5, 2

    def problem(self, i):
        r = _rng(self.seed, self.split, i)
        d = [r.randrange(10) for _ in range(r.randint(min(3, self.size), self.size))]
        return [{"role": "user", "content": "Sort: " + " ".join(map(str, d))}], " ".join(map(str, sorted(d)))


def gsm8k_conversation(record: dict, where: str = "gsm8k") -> list[dict]:
    """A GSM8K record {question, answer} as a conversation; calculator annotations <<...>> are dropped."""
    if not isinstance(record, dict) or not isinstance(record.get("question"), str) or \
            not isinstance(record.get("answer"), str):
        raise ValueError(f"{where}: expected an object with string 'question' and 'answer'")
    return [{"role": "user", "content": record["question"]},
            {"role": "assistant", "content": _CALC.sub("", record["answer"])}]


class GSM8K(Task):
    name = "gsm8k"
    answer_tokens = 256

    def __init__(self, seed: int = 0, split: str = "train", size: int | None = None, path: str | Path | None = None):
        super().__init__(seed, split)
        if size is not None:
            raise ValueError("task gsm8k takes no size")
        # val: the last 500 of the train file (the test file is scored only at promotion)
        file = Path(path) if path else shared_data_dir() / "gsm8k" / ("test.jsonl.gz" if split == "test" else
                                                                   "train.jsonl.gz")
        rows = read_jsonl(file)
        if split != "test":
            rows = rows[:-500] if split == "train" else rows[-500:]
        self.rows = rows
        self.file = file

    def __len__(self):
        return len(self.rows)

    def problem(self, i):
        conv = self.conversation(i)
        return conv[:1], final_number(conv[1]["content"]) or ""

    def conversation(self, i):
        i %= len(self.rows)
        return gsm8k_conversation(self.rows[i], where=f"{self.file} ({self.split} item {i})")

    def reward(self, completion, answer):
        return float(final_number(completion) == answer)


TASKS = {t.name: t for t in (Arith, Copy, Sort, GSM8K)}


def make_task(spec: str, seed: int = 0, split: str = "train") -> Task:
    """A task from its spec, NAME or NAME:SIZE (e.g. arith, arith:5, gsm8k)."""
    name, _, size = spec.partition(":")
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r} (known: {', '.join(TASKS)})")
    if size and not size.isdigit():
        raise ValueError(f"task {spec!r}: the size after ':' must be a whole number")
    return TASKS[name](seed=seed, split=split, size=int(size) if size else None)


__all__ = ["TASKS", "Task", "gsm8k_conversation", "make_task"]
