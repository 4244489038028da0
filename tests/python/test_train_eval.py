"""val_bpb (DESIGN.md §7): the definition, independence of the batch size, shards vs text files, the CLI."""

import math

import numpy as np
import pytest

import nanowhale as nw
from nanowhale.data.shards import read_shard, shard_paths
from nanowhale.evaluate import evaluate_files, val_bpb
from train_fixtures import micro_run_config


@pytest.fixture(scope="module")
def run(micro_data, tmp_path_factory):
    data, vocab = micro_data
    d = tmp_path_factory.mktemp("eval") / "run"
    nw.train(micro_run_config(data, d, vocab, train={"steps": 4}), progress=False)
    return nw.load(d)


def reference_bpb(model, tok, paths, tokens):
    """The definition, straight: rows [g*T, g*T+T+1) of the concatenated stream, specials excluded."""
    T = model.config.seq_len
    stream = np.concatenate([read_shard(p) for p in paths])
    rows = min(tokens // T, (len(stream) - 1) // T)
    lens = tok.token_byte_lengths()
    nats = 0.0
    n_bytes = 0
    for g in range(rows):
        x, y = stream[g * T: g * T + T][None], stream[g * T + 1: g * T + T + 1][None].copy()
        keep = lens[y] > 0
        y[~keep] = -1
        nats += float(model.token_losses(x, y).astype(np.float64).sum())
        n_bytes += int(lens[y[keep]].sum())
    return nats / (math.log(2) * n_bytes)


def test_val_bpb_matches_the_definition_and_ignores_the_batch_size(run, micro_data):
    data, _ = micro_data
    paths = shard_paths(data, "val")
    tokens = 32 * 21  # 21 rows: no batch size below divides it evenly except 1, 3, 7
    ref = reference_bpb(run.model, run.tokenizer, paths, tokens)
    results = [val_bpb(run.model, run.tokenizer, paths, tokens, batch_size=b) for b in (1, 2, 3, 5, 8, 21, 64)]
    assert all(r["rows"] == 21 for r in results)
    values = [r["val_bpb"] for r in results]
    # The same positions and counts for every batch size; the float32 per-token losses may differ in the
    # last bit with the GEMM shapes (B*T rows), so the sums agree to ~1e-9, far below the run-to-run noise.
    assert len({(r["tokens"], r["bytes"]) for r in results}) == 1
    assert max(values) - min(values) < 1e-7 * values[0], values
    assert values[0] == pytest.approx(ref, rel=1e-7)


def test_special_tokens_are_excluded(run, tmp_path):
    tok = run.tokenizer
    bos = tok.special_id("<|bos|>")
    ids = tok.encode("the whale swims deep under cold grey water. ")
    stream = np.asarray(([bos] + ids) * 20, np.int32)  # many short documents: many <|bos|> targets
    path = str(tmp_path / "val_000000.bin")
    nw.data.shards.write_shard(path, stream, tok.vocab_size)
    r = val_bpb(run.model, tok, [path], 10_000)
    T = run.model.config.seq_len
    targets = stream[1: 1 + r["rows"] * T]
    lens = tok.token_byte_lengths()
    assert (targets == bos).sum() > 5
    assert r["tokens"] == (targets != bos).sum()
    assert r["bytes"] == lens[targets].sum() == sum(len(tok.token_bytes(int(t))) for t in targets if t != bos)
    assert r["val_bpb"] == pytest.approx(reference_bpb(run.model, tok, [path], 10_000), rel=1e-7)


def test_text_files_and_shards_agree(run, tmp_path):
    tok = run.tokenizer
    texts = ["Deep under cold grey water, the whale swims. " * 6, "def return class import value index " * 7]
    files = []
    for i, t in enumerate(texts):
        p = tmp_path / f"t{i}.txt"
        p.write_text(t)
        files.append(str(p))
    bos = tok.special_id("<|bos|>")
    stream = np.concatenate([np.asarray([bos] + tok.encode(t), np.int32) for t in texts])
    shard = tmp_path / "val_000000.bin"
    nw.data.shards.write_shard(str(shard), stream, tok.vocab_size)
    from_text = evaluate_files(run.model, tok, files, 10_000, 4)
    from_shard = evaluate_files(run.model, tok, [str(shard)], 10_000, 4)
    assert from_text == from_shard
    with pytest.raises(ValueError, match="either"):
        evaluate_files(run.model, tok, files + [str(shard)], 10_000)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hi")
    with pytest.raises(ValueError, match="one row"):
        evaluate_files(run.model, tok, [str(tiny)], 10_000)
