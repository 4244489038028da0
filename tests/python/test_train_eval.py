"""val_bpb (DESIGN.md §7): the definition, independence of the batch size, shards vs text files, the CLI."""

import math

import numpy as np
import pytest

import nanowhale as nw
from nanowhale.data.shards import read_shard, shard_paths
from nanowhale.evaluate import evaluate_shards, score_text_files, val_bpb
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


def test_text_files_are_scored_whole_and_match_a_shard(run, tmp_path):
    tok = run.tokenizer
    T = run.model.config.seq_len
    whole_rows = "Deep under cold grey water, the whale swims. " * 40  # 35 rows of the micro model, exactly
    texts = [whole_rows + "The end.", "def return class import value index " * 3]
    files = []
    for i, t in enumerate(texts):
        p = tmp_path / f"t{i}.txt"
        p.write_text(t)
        files.append(str(p))
    bos = tok.special_id("<|bos|>")
    ids = [np.asarray([bos] + tok.encode(t), np.int32) for t in texts]
    assert len(ids[0]) > 3 * T and (len(ids[0]) - 1) % T, "the long file must end in a partial row"
    r = score_text_files(run.model, tok, files, batch_size=4)
    byte_len = tok.token_byte_lengths()
    for f, doc, text in zip(r["files"], ids, texts):
        assert f["bytes"] == len(text.encode()) and f["tokens"] == len(doc) - 1  # every target, once
        # Reference: each row of T + 1 at stride T through token_losses, the leftover targets in a shorter row.
        nats = 0.0
        for a in range(0, len(doc) - 1, T):
            row = doc[a:a + T + 1][None]
            nats += float(run.model.token_losses(row[:, :-1], row[:, 1:]).sum(dtype=np.float64))
        assert f["bpb"] == pytest.approx(nats / (np.log(2) * byte_len[doc[1:]].sum()), rel=1e-6)
    # A text of whole rows scores as its tokens do in a shard.
    (tmp_path / "rows.txt").write_text(whole_rows)
    doc = np.asarray([bos] + tok.encode(whole_rows), np.int32)
    assert (len(doc) - 1) % T == 0
    shard = tmp_path / "val_000000.bin"
    nw.data.shards.write_shard(str(shard), doc, tok.vocab_size)
    as_text = score_text_files(run.model, tok, [str(tmp_path / "rows.txt")])["files"][0]["bpb"]
    assert as_text == pytest.approx(evaluate_shards(run.model, tok, [str(shard)], None)["val_bpb"], rel=1e-9)
    assert r["total"]["bytes"] == sum(len(t.encode()) for t in texts)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.txt holds no text"):
        score_text_files(run.model, tok, [str(empty)])
