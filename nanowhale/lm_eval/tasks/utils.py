"""Scoring the harness cannot express in YAML: GSM8K's final number, extracted as nanowhale's task does."""

from nanowhale.tasks.gsm8k import final_number


def final_number_match(doc: dict, results: list[str]) -> dict:
    answer, target = final_number(results[0]), final_number(doc["answer"])
    return {"exact_match": float(answer is not None and answer == target)}
