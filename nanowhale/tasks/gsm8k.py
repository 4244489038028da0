"""GSM8K (test, 1,319 problems): grade-school maths, generated greedily, scored by the final number."""

import re

from nanowhale.tasks.base import GenerativeTask, read_jsonl, register, shared_data_dir

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The answer a solution states: the number after '####' if present, else the last number; commas and a
    trailing '.0' dropped, so '1,000' and '1000.0' both give '1000'."""
    tail = text.split("####", 1)[1] if "####" in text else text
    found = _NUMBER.findall(tail)
    if not found:
        return None
    n = (found[0] if "####" in text else found[-1]).replace(",", "").rstrip(".")
    return n[:-2] if n.endswith(".0") else n


@register
class GSM8K(GenerativeTask):
    name = "gsm8k"
    stop = ("\n\n", "\nQuestion:")

    def load(self):
        return read_jsonl(shared_data_dir() / "gsm8k" / "test.jsonl.gz")

    def fewshot_items(self):
        return read_jsonl(shared_data_dir() / "gsm8k" / "train.jsonl.gz")

    def prompt(self, item):
        return f"Question: {item['question']}\nAnswer:"

    def fewshot_text(self, item):
        return f"{self.prompt(item)} {item['answer']}"

    def target(self, item):
        return final_number(item["answer"])

    def extract(self, completion):
        return final_number(completion)
