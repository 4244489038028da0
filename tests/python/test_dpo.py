"""nanowhale dpo: the loss and gradient against a direct float64 computation; learning a toy preference."""

import json

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config
from nanowhale.posttrain.batch import inputs_targets
from nanowhale.posttrain.dpo import DPOSettings, dpo, dpo_backward, final_turn_mask, fit_final_turn, load_pairs
from test_model_gradients import randomise

EPS = 1e-5


def logps64(model, rows, mask):
    """Each row's summed log-prob of its learned tokens, in float64 (the weighted loss with weights = 1)."""
    out = []
    for r, m in zip(rows, mask):
        inp, tgt, learned = inputs_targets(r[None], m[None])
        out.append(-model.forward_backward(inp, tgt, weights=learned.astype(np.float64)))
        model.zero_grad()
    return np.array(out)


def dpo_loss64(model, rows, mask, ref, beta):
    pol = logps64(model, rows, mask)
    P = len(rows) // 2
    margin = beta * ((pol[:P] - ref[:P]) - (pol[P:] - ref[P:]))
    return float(np.mean(np.logaddexp(0.0, -margin)))


def test_dpo_loss_and_gradient_equal_a_direct_float64_computation():
    cfg = micro_config(balance_alpha=0.0)
    rng = np.random.default_rng(0)
    P, L = 3, 9
    rows = rng.integers(0, cfg.vocab_size, size=(2 * P, L)).astype(np.int32)
    mask = np.zeros((2 * P, L), np.uint8)
    for i in range(2 * P):
        mask[i, rng.integers(3, 6):L - rng.integers(0, 2)] = 1   # a response of varying length
    ref = rng.normal(-20, 2, size=2 * P)
    beta = 0.7
    model = nw.Model(cfg, seed=0, dtype="float64")
    randomise(model, 1)
    model.zero_grad()
    st = dpo_backward(model, rows, mask, ref, beta, micro_batch=4)
    assert st["loss"] == pytest.approx(dpo_loss64(model, rows, mask, ref, beta), rel=1e-6)
    model.zero_grad()
    dpo_backward(model, rows, mask, ref, beta, micro_batch=4)
    grads = {n: model.get_grad(n) for n in model.parameter_names()}
    pick = np.random.default_rng(2)
    checked = 0
    for name in model.parameter_names():
        param = model.get_param(name)
        flat = param.reshape(-1)
        for idx in pick.choice(flat.size, size=min(2, flat.size), replace=False):
            x0 = flat[idx]
            flat[idx] = x0 + EPS
            model.set_param(name, param)
            up = dpo_loss64(model, rows, mask, ref, beta)
            flat[idx] = x0 - EPS
            model.set_param(name, param)
            down = dpo_loss64(model, rows, mask, ref, beta)
            flat[idx] = x0
            model.set_param(name, param)
            numeric, analytic = (up - down) / (2 * EPS), grads[name].reshape(-1)[idx]
            assert abs(numeric - analytic) <= 1e-6 + 1e-5 * abs(numeric), f"{name}[{idx}]: {analytic} vs {numeric}"
            checked += abs(numeric) > 1e-6
    assert checked >= 10  # the check is not vacuous


def test_final_turn_mask_covers_only_the_last_assistant_turn_and_long_dialogues_keep_their_end():
    A = 9
    ids = np.array([1, 2, A, 5, 6, 3, 2, A, 7, 8, 4])
    mask = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1], np.uint8)
    final = final_turn_mask(ids, mask, A)
    assert final.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert fit_final_turn(ids, final, 11, A)[0].tolist() == ids.tolist()              # fits: unchanged
    cut_ids, cut_mask = fit_final_turn(ids, final, 5, A)                               # the earliest context goes
    assert cut_ids.tolist() == [2, A, 7, 8, 4] and cut_mask.tolist() == [0, 0, 1, 1, 1]
    assert fit_final_turn(ids, final, 3, A) is None                                    # the final turn alone is longer


def test_dpo_learns_a_toy_preference(micro_base, tmp_path):
    path = tmp_path / "pairs.jsonl"
    with open(path, "w") as f:
        for i in range(80):
            q = f"\n\nHuman: tell me about {['whales', 'fish', 'reefs', 'stone'][i % 4]} {i}"
            f.write(json.dumps({"chosen": q + "\n\nAssistant: the whale swims deep",
                                "rejected": q + "\n\nAssistant: light falls in long lines"}) + "\n")
    assert len(load_pairs(path)) == 80
    out = dpo(DPOSettings(data=[str(path)], steps=15, batch_pairs=8, micro_batch=8, lr_scale=1.0, beta=0.5,
                          val_frac=0.2, n_samples=0), ckpt=micro_base, run_dir=tmp_path / "dpo", log=lambda *a: None)
    assert out["val_reward_accuracy_start"] == 0.0          # the policy starts as the reference: margins 0
    assert out["val_reward_accuracy"] >= 0.9 and out["val_margin"] > 0
    recs = [json.loads(line) for line in open(tmp_path / "dpo" / "metrics.jsonl")]
    steps = [r for r in recs if "reward_accuracy" in r and "event" not in r]
    assert {"loss", "margin", "chosen_logp", "rejected_logp", "chosen_reward", "rejected_reward"} <= set(steps[0])
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert nw.load(tmp_path / "dpo").checkpoint.meta["posttrain"]["parent"]["stage"] == "pretrain"


def test_bad_pairs_raise(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b"}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:1: expected an object with 'chosen' and 'rejected'"):
        load_pairs(p)
