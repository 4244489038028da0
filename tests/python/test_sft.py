"""nanowhale sft: best-fit packing of whole conversations, masked loss, the run directory, resume, errors."""

import json

import numpy as np
import pytest

import nanowhale as nw
import nanowhale._C as _C
from nanowhale.cli import main
from nanowhale.posttrain.sft import SFTSettings, sft

QUIET = dict(log=lambda *a: None)


def packed(lengths, row_len):
    ids = np.concatenate([np.full(n, i + 1, np.int32) for i, n in enumerate(lengths)])
    mask = np.ones(len(ids), np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return _C.pack_conversations(ids, mask, offsets, row_len, 0)


def test_packing_is_best_fit_and_never_splits_a_conversation():
    tokens, mask, row_of, stats = packed([5, 3, 6, 2, 4, 1], row_len=8)
    # longest first: 6 -> row 0, 5 -> row 1, 4 -> row 2, 3 -> row 1 (fills it), 2 -> row 0 (fills it), 1 -> row 2
    assert row_of.tolist() == [1, 1, 0, 0, 2, 2]
    assert tokens.tolist() == [[3, 3, 3, 3, 3, 3, 4, 4], [1, 1, 1, 1, 1, 2, 2, 2], [5, 5, 5, 5, 6, 0, 0, 0]]
    assert mask.tolist()[2] == [1, 1, 1, 1, 1, 0, 0, 0]  # padding is never learned
    assert stats == {"truncated": 0, "padding": 3}
    for i, n in enumerate([5, 3, 6, 2, 4, 1]):  # each conversation whole, in one row
        assert (tokens == i + 1).sum() == n and (tokens[row_of[i]] == i + 1).sum() == n


def test_packing_cuts_only_a_conversation_longer_than_a_row():
    tokens, mask, row_of, stats = packed([10, 2], row_len=4)
    assert tokens.tolist() == [[1, 1, 1, 1], [2, 2, 0, 0]] and stats["truncated"] == 1
    with pytest.raises(ValueError, match="offsets must end at len"):
        _C.pack_conversations(np.ones(3, np.int32), np.ones(3, np.uint8), np.array([0, 2]), 4, 0)
    with pytest.raises(ValueError, match="conversation 0 is empty"):
        _C.pack_conversations(np.ones(3, np.int32), np.ones(3, np.uint8), np.array([0, 0, 3]), 4, 0)


def write_chats(path, n):
    with open(path, "w") as f:
        for i in range(n):
            a, b = i % 7, (3 * i) % 5
            msgs = [{"role": "user", "content": f"add {a} and {b}"}, {"role": "assistant", "content": f"{a + b}"}]
            f.write(json.dumps({"messages": msgs}) + "\n")
        f.write(json.dumps({"messages": [{"role": "user", "content": "nothing to learn here"}]}) + "\n")
    return str(path)


def settings(data, **kw):
    base = dict(data=data, steps=12, batch_rows=8, micro_batch=4, lr_scale=1.0, val_frac=0.1, n_samples=1)
    base.update(kw)
    return SFTSettings(**base)


def test_sft_learns_writes_a_run_like_train_and_resumes_bit_identically(micro_base, tmp_path):
    data = write_chats(tmp_path / "chats.jsonl", 120)
    out = sft(settings([data]), ckpt=micro_base, run_dir=tmp_path / "sft", **QUIET)
    assert out["val_loss"] < 0.6 * out["val_loss_start"]
    run = tmp_path / "sft"
    recs = [json.loads(line) for line in open(run / "metrics.jsonl")]
    data_rec = next(r for r in recs if r.get("event") == "data")
    assert data_rec["skipped"] == 1 and data_rec["val_conversations"] == 12   # 121 read, the empty one skipped
    steps = [r for r in recs if "loss" in r and "event" not in r]
    assert [r["step"] for r in steps] == list(range(1, 13)) and all(np.isfinite(r["loss"]) for r in steps)
    loaded = nw.load(run)                       # a normal checkpoint: nw.load, eval and sample work on it
    meta = loaded.checkpoint.meta["posttrain"]
    assert meta["stage"] == "sft" and meta["parent"]["stage"] == "pretrain"
    assert meta["parent"]["checkpoint"] == str(nw.load(micro_base).checkpoint.dir.resolve())

    # an interrupted run (checkpoint at step 6) resumed gives the same losses and weights
    part = sft(settings([data], steps=12, checkpoint_every=6, keep=5), ckpt=micro_base, run_dir=tmp_path / "a",
               **QUIET)
    import shutil
    shutil.rmtree(tmp_path / "a" / "checkpoints" / "step_000012")
    (tmp_path / "a" / "checkpoints" / "latest").write_text("step_000006\n")
    resumed = sft(SFTSettings(), resume=tmp_path / "a", **QUIET)
    assert resumed["train_loss"] == part["train_loss"] == out["train_loss"]
    a, b = nw.load(run).model, nw.load(tmp_path / "a").model
    for name in a.parameter_names():
        np.testing.assert_array_equal(a.get_param(name), b.get_param(name))
    losses = [r["loss"] for r in map(json.loads, open(tmp_path / "a" / "metrics.jsonl")) if "loss" in r and "event" not in r]
    assert losses == [r["loss"] for r in steps]  # the resume dropped the records after step 6, then rewrote them


def test_sft_cli_and_errors(micro_base, tmp_path, capsys):
    data = write_chats(tmp_path / "c.jsonl", 30)
    assert main(["sft", "--ckpt", str(micro_base), "--data", data, "task:arith:3@20", "--steps", "2",
                 "--batch-rows", "4", "--run-dir", str(tmp_path / "cli"), "--n-samples", "0"]) == 0
    out = capsys.readouterr().out
    assert "status: done" in out and "val_loss:" in out
    nothing = tmp_path / "n.jsonl"
    nothing.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match="none of the 1 training conversations has anything to learn"):
        sft(settings([str(nothing)], val_frac=0.0), ckpt=micro_base, run_dir=tmp_path / "n", **QUIET)
    with pytest.raises(ValueError, match="unknown conversation format"):
        bad = tmp_path / "b.jsonl"
        bad.write_text('{"text": "x"}\n')
        sft(settings([str(bad)]), ckpt=micro_base, run_dir=tmp_path / "b", **QUIET)
    assert main(["sft", "--ckpt", str(micro_base), "--run-dir", str(tmp_path / "x")]) == 2
    assert "sft needs --data" in capsys.readouterr().err
