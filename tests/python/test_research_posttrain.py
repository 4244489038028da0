"""The research harness's post-training entry: a pipeline from an experiment config, its score, its budget."""

import pytest

from nanowhale.research.commands import heldout_key
from nanowhale.research.posttrain import posttrain, read_experiment

EXPERIMENT = """
parent = "{parent}"
task = "arith:3"
stages = ["sft", "rl"]
[sft]
data = ["task:arith:3@300"]
steps = 8
batch_rows = 8
micro_batch = 4
lr_scale = 1.0
[rl]
task = "arith:3"
steps = 4
max_new_tokens = 4
"""


def spec_for(tmp_path, text, budget=("tokens", 1e9), heldout=False):
    path = tmp_path / "experiment.toml"
    path.write_text(text)
    return {"experiment_config": str(path), "budget_kind": budget[0], "budget_amount": budget[1],
            "heldout": heldout, "forced": ["train.seed=1", "train.threads=2", f'run.dir="{tmp_path / "run"}"']}


def test_entry_runs_the_stages_and_scores_the_val_and_test_splits(micro_base, tmp_path):
    res = posttrain(spec_for(tmp_path, EXPERIMENT.format(parent=micro_base), heldout=True))
    assert res["status"] == "done" and set(res["stages"]) == {"sft", "rl"}
    assert res["val_problems"] == 128 and 0.0 <= res["val_reward"] <= 1.0
    assert 0.0 <= res["heldout_metric"] <= 1.0 and heldout_key(res) == "heldout_metric"
    # 8 SFT steps of 8 rows of 65 tokens, 4 RL steps of 4 x 8 samples x 4 tokens, generated and trained
    assert res["planned_tokens"] == 8 * 8 * 65 + 4 * 4 * 8 * 4 * 2 and res["step_tokens_per_second"] > 0
    assert (tmp_path / "run" / "rl" / "posttrain.json").exists()     # the rl run's parent is the sft checkpoint
    assert not (tmp_path / "run" / "sft" / "checkpoints").exists()   # weights are not kept per experiment


def test_budget_and_config_errors(micro_base, tmp_path):
    text = EXPERIMENT.format(parent=micro_base)
    with pytest.raises(ValueError, match=r"plans 4,416 tokens \(sft 4,160, rl 256\); the budget allows 4,000"):
        posttrain(spec_for(tmp_path, text.replace("steps = 4\n", "steps = 1\n"), budget=("tokens", 4000)))
    with pytest.raises(ValueError, match="not time"):
        posttrain(spec_for(tmp_path, text, budget=("time", 60)))
    cases = [(text.replace("lr_scale = 1.0", "seed = 3"), r"sets \['seed'\], which the harness controls"),
             (text.replace('stages = ["sft", "rl"]', 'stages = ["ppo"]'), "stages"),
             (text + "\nlr = 1\n", r"\[rl\]: unknown setting"),
             (text.replace("steps = 8", "steps = -1"), r"\[sft\]: steps"),
             ("lr = 1\n" + text, "unknown key")]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            read_experiment(spec_for(tmp_path, bad)["experiment_config"])
