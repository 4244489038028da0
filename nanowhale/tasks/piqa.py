"""PIQA (validation, 1,838 items): which of two solutions reaches a physical goal."""

from nanowhale.tasks.base import MCItem, MultipleChoiceTask, read_jsonl, register, shared_data_dir


@register
class PIQA(MultipleChoiceTask):
    name = "piqa"
    primary = "acc_norm"

    def load(self):
        return read_jsonl(shared_data_dir() / "piqa" / "valid.jsonl.gz")

    def render(self, item):
        choices = [" " + item["sol1"], " " + item["sol2"]]
        return MCItem(f"Question: {item['goal']}\nAnswer:", choices, int(item["label"]))
