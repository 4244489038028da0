"""MMLU (57 subjects; test split, few-shot examples from dev): the answer letter after lettered choices."""

from nanowhale.tasks.base import MCItem, MultipleChoiceTask, read_jsonl, register, shared_data_dir

LETTERS = "ABCD"


@register
class MMLU(MultipleChoiceTask):
    name = "mmlu"

    def __init__(self, split: str = "test"):
        if split not in ("test", "val", "dev"):
            raise ValueError(f"mmlu split must be test, val or dev, got {split!r}")
        self.split = split

    def load(self):
        return read_jsonl(shared_data_dir() / "mmlu" / f"{self.split}.jsonl.gz")

    def fewshot_items(self):
        return read_jsonl(shared_data_dir() / "mmlu" / "dev.jsonl.gz")

    def render(self, item):
        subject = item["subject"].replace("_", " ")
        lines = [f"The following is a multiple choice question about {subject}.", "", item["question"]]
        lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(item["choices"])]
        lines.append("Answer:")
        if item["answer"] not in LETTERS[: len(item["choices"])]:
            raise ValueError(f"mmlu: answer {item['answer']!r} is not one of {LETTERS[: len(item['choices'])]}")
        return MCItem("\n".join(lines), [" " + LETTERS[i] for i in range(len(item["choices"]))],
                      LETTERS.index(item["answer"]))
