"""HellaSwag (validation, 10,042 items): which of 4 endings continues an activity description."""

from nanowhale.tasks.base import MCItem, MultipleChoiceTask, read_jsonl, register, shared_data_dir


@register
class HellaSwag(MultipleChoiceTask):
    name = "hellaswag"
    primary = "acc_norm"  # endings differ in length; the per-byte score is the field's usual number

    def load(self):
        return read_jsonl(shared_data_dir() / "hellaswag" / "val.jsonl.gz")

    def render(self, item):
        context = f"{item['activity_label']}: {item['ctx']}"
        return MCItem(context, [" " + e for e in item["endings"]], int(item["label"]))
