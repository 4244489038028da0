"""ARC-Easy and ARC-Challenge (test sets): grade-school science questions, 3-5 answer texts."""

from nanowhale.tasks.base import MCItem, MultipleChoiceTask, read_jsonl, register, shared_data_dir


class _ARC(MultipleChoiceTask):
    file = ""

    def load(self):
        return read_jsonl(shared_data_dir() / self.name / self.file)

    def render(self, item):
        return MCItem(item["query"] + "\nAnswer:", [" " + c for c in item["choices"]], int(item["gold"]))


@register
class ARCEasy(_ARC):
    name = "arc-easy"
    file = "arc_easy.jsonl.gz"


@register
class ARCChallenge(_ARC):
    name = "arc-challenge"
    file = "arc_challenge.jsonl.gz"
    primary = "acc_norm"
