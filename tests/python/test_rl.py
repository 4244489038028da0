"""nanowhale rl: exact verifiers, and the reward rising on a synthetic task on the micro model."""

import json

import numpy as np
import pytest

from nanowhale.posttrain.rl import RLSettings, rl
from nanowhale.posttrain.sft import SFTSettings, sft
from nanowhale.posttrain.tasks import make_task

QUIET = dict(log=lambda *a: None)


def test_synthetic_tasks_and_verifiers():
    arith = make_task("arith:5", seed=1)
    msgs, gold = arith.problem(3)
    assert msgs == arith.problem(3)[0] and msgs[0]["role"] == "user"        # a pure function of (seed, i)
    a, op, b = msgs[0]["content"][len("What is "):-1].partition("+") if "+" in msgs[0]["content"] else \
        msgs[0]["content"][len("What is "):-1].partition("-")
    assert int(gold) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    assert arith.reward(f" {gold}\n", gold) == 1.0 and arith.reward(gold + "0", gold) == 0.0
    assert make_task("arith", 1, "val").problem(0) != make_task("arith", 1, "train").problem(0)
    srt = make_task("sort")
    m, g = srt.problem(0)
    assert g.split() == sorted(m[0]["content"].split()[1:])
    cp = make_task("copy:4")
    m, g = cp.problem(2)
    assert m[0]["content"] == f"Copy: {g}" and 3 <= len(g) <= 4
    for spec, match in (("nope", "unknown task"), ("arith:x", "whole number"), ("sort:1", "size must be >= 2")):
        with pytest.raises(ValueError, match=match):
            make_task(spec)


def test_gsm8k_task_scores_the_final_number():
    task = make_task("gsm8k", split="val")
    msgs, gold = task.problem(0)
    assert gold.lstrip("-").isdigit() and task.reward(f"... #### {gold}", gold) == 1.0
    assert task.reward(f"it is {int(gold) + 1}", gold) == 0.0
    conv = task.conversation(0)
    assert conv[0] == msgs[0] and "<<" not in conv[1]["content"] and conv[1]["content"].endswith(gold)


@pytest.fixture(scope="module")
def arith_sft(micro_base, tmp_path_factory):
    """A short SFT that gives the micro model the answer format and ~40% accuracy on arith:3."""
    run = tmp_path_factory.mktemp("arith") / "sft"
    sft(SFTSettings(data=["task:arith:3@2000"], steps=60, batch_rows=8, micro_batch=4, lr_scale=1.0, n_samples=0),
        ckpt=micro_base, run_dir=run, **QUIET)
    return run


def test_reward_rises_on_a_synthetic_task(arith_sft, tmp_path):
    out = rl(RLSettings(task="arith:3", steps=60, prompts=4, group=8, max_new_tokens=6, lr_scale=0.3,
                        eval_problems=32, n_samples=1), ckpt=arith_sft, run_dir=tmp_path / "rl", **QUIET)
    recs = [json.loads(line) for line in open(tmp_path / "rl" / "metrics.jsonl")]
    rewards = [r["reward_mean"] for r in recs if "reward_mean" in r]
    assert len(rewards) == 60
    assert np.mean(rewards[-15:]) > np.mean(rewards[:15]) + 0.2, rewards
    assert out["val_reward"] > out["val_reward_start"]           # greedy, on held-out problems
    step = next(r for r in recs if "reward_mean" in r)
    assert {"pass_at_k", "zero_variance_frac", "truncated_frac", "mean_length", "kl", "sample_seconds"} <= set(step)


def test_kl_term_is_measured_against_the_start_model(arith_sft, tmp_path):
    kls = {}
    for kl in (0.0, 1.0):
        rl(RLSettings(task="arith:3", steps=6, prompts=4, group=8, max_new_tokens=6, lr_scale=0.3, kl=kl,
                      eval_problems=0, n_samples=0), ckpt=arith_sft, run_dir=tmp_path / f"rl{kl}", **QUIET)
        recs = [json.loads(line) for line in open(tmp_path / f"rl{kl}" / "metrics.jsonl")]
        kls[kl] = [r["kl"] for r in recs if "reward_mean" in r]
    assert kls[0.0] == [0.0] * 6                  # not computed without the coefficient
    assert kls[1.0][0] == pytest.approx(0.0, abs=1e-6)   # before the first update the policy is the start model
    assert all(np.isfinite(kls[1.0])) and max(kls[1.0]) > 1e-6
