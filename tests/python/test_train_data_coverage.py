"""Training sees all of its data: on long documents the validation loss tracks the training loss (a loader that
kept only the start of each document would let the model memorise a tiny subset), and `data prepare --val`."""

import random

import numpy as np

import nanowhale as nw
from train_fixtures import WORDS, micro_run_config


def write_long_documents(directory, n_docs, seed):
    """Long documents (~2,500 words) of seeded pseudo-sentences: train and val from one distribution."""
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    for i in range(n_docs):
        words = [rng.choice(WORDS) for _ in range(2500)]
        (directory / f"book_{i:03d}.txt").write_text(" ".join(words) + ".\n")
    return directory


def test_validation_loss_tracks_training_loss_on_long_documents(tmp_path):
    from nanowhale.data.prepare import prepare

    data = tmp_path / "data"
    prepare(inputs=[str(write_long_documents(tmp_path / "train", 16, seed=1))], out_dir=data, vocab_size=300,
            val_sources=[str(write_long_documents(tmp_path / "val", 2, seed=2))], progress=False)
    assert len(list(data.glob("val_*.bin"))) == 1
    cfg = micro_run_config(data, tmp_path / "run", 300, train={"steps": 250})
    cfg["eval"] = {"tokens": 4096, "batch_size": 8}
    r = nw.train(cfg, progress=False, log=lambda *a: None)
    train_loss = float(np.mean(r["losses"][-25:]))
    assert r["status"] == "done" and r["epochs"] < 1.0 and r["data_seen"] == r["epochs"]
    # Memorising the first row of each document drove the training loss far below the validation loss.
    assert abs(r["val_loss"] - train_loss) < 0.05 * train_loss, (r["val_loss"], train_loss)


def test_epochs_are_logged_and_a_second_pass_warns_once(micro_data, tmp_path):
    import json

    data, vocab = micro_data
    split = sum(nw.data.shards.read_shard_header(p)["n_tokens"] for p in nw.data.shards.shard_paths(data, "train"))
    step_tokens = 2 * 4 * 33  # accumulation x micro_batch x (seq_len + 1): what one step takes from the split
    steps = split // step_tokens + 3  # just past one epoch
    logs = []
    r = nw.train(micro_run_config(data, tmp_path / "run", vocab, train={"steps": steps}, sample={"n": 2}),
                 progress=False, log=logs.append)
    assert f"train split {split:,} tokens" in logs[0] and f"{steps * step_tokens / split:.2f} epochs" in logs[0]
    warnings = [m for m in logs if "second pass" in m]
    assert len(warnings) == 1, logs
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [rec["epoch"] for rec in records if "loss" in rec]
    assert epochs == sorted(epochs) and epochs[0] == step_tokens / split and 1.0 < epochs[-1] == r["epochs"]
    assert [rec["step"] for rec in records if rec.get("event") == "data_repeat"] == [split // step_tokens + 1]
    assert r["data_seen"] == 1.0
    # Samples start from the first words of validation documents (the data's own kind of text).
    tok = nw.data.tokenizer.Tokenizer.load(str(data / "tokenizer.nwtok"))
    prompts = nw.generate.prompts_from_documents(tok, nw.data.shards.shard_paths(data, "val"), 2)
    assert len(prompts) == 2 and all(len(p.split()) == 4 for p in prompts)
    assert [s[:len(p)] for s, p in zip(r["samples"], prompts)] == prompts
