"""The C++ loader: BOS-aligned best-fit packing, sequential rows, determinism, exact resume, ranks."""

import numpy as np
import pytest

from nanowhale.data.shards import Loader, iterate, write_shard

BOS, VOCAB = 0, 1000


def make_docs(n, seed=0, max_len=60):
    rng = np.random.default_rng(seed)
    # Each document: BOS, then a unique id tag (so documents can be recognised), then random tokens.
    return [np.concatenate([[BOS, 1 + i % 999], rng.integers(1, VOCAB, rng.integers(0, max_len))]).astype(np.int32)
            for i in range(n)]


@pytest.fixture
def shards(tmp_path):
    docs = make_docs(300)
    paths = []
    for k, chunk in enumerate([docs[:100], docs[100:130], docs[130:]]):
        p = tmp_path / f"train_{k:06d}.bin"
        write_shard(str(p), np.concatenate(chunk), VOCAB)
        paths.append(str(p))
    return paths, docs


def segments(row):
    starts = list(np.flatnonzero(row == BOS)) + [len(row)]
    return [row[a:b] for a, b in zip(starts, starts[1:])]


def test_packed_rows_are_bos_aligned_documents(shards):
    paths, docs = shards
    by_tag = {}
    for d in docs:
        by_tag.setdefault(int(d[1]), []).append(d)
    loader = Loader(paths, B=4, T=63, bos_id=BOS, vocab_size=VOCAB, seed=1)
    cropped = whole = wasted = 0
    for _ in range(40):
        batch = loader.next()
        assert batch.shape == (4, 64) and batch.dtype == np.int32
        for row in batch:
            assert row[0] == BOS  # no padding anywhere: every row starts a document
            segs = segments(row)
            for i, seg in enumerate(segs):
                if len(seg) == 1:  # a document cropped to its BOS (the row had one token left)
                    assert i == len(segs) - 1
                    cropped += 1
                    wasted += min(len(d) for d in docs) - 1
                    continue
                match = [d for d in by_tag[int(seg[1])] if len(d) >= len(seg) and np.array_equal(d[:len(seg)], seg)]
                assert match, "a row segment is not a document prefix"
                if any(len(d) == len(seg) for d in match):
                    whole += 1
                else:
                    cropped += 1
                    assert i == len(segs) - 1, "only the last document of a row may be cropped"
    assert cropped <= 40 * 4 and whole > cropped
    assert wasted < 0.15 * 40 * 4 * 64, wasted  # best fit crops little (documents here are 2..61 tokens)


def test_long_documents_are_cropped(tmp_path):
    doc = np.concatenate([[BOS], np.arange(1, 500)]).astype(np.int32)
    write_shard(str(tmp_path / "s.bin"), np.concatenate([doc, doc[:5]]), VOCAB)
    batch = Loader([str(tmp_path / "s.bin")], B=3, T=32, bos_id=BOS, vocab_size=VOCAB).next()
    for row in batch:
        assert row[0] == BOS
        assert np.array_equal(row, doc[:33]) or np.array_equal(row[:5], doc[:5])


def test_deterministic_and_seeded(shards):
    paths, _ = shards
    def run(seed, prefetch):
        loader = Loader(paths, B=2, T=31, bos_id=BOS, seed=seed, prefetch=prefetch)
        return [loader.next() for _ in range(30)]
    a, b, c = run(7, 2), run(7, 0), run(8, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("packed", [True, False])
def test_resume_sees_the_same_batches(shards, packed):
    paths, _ = shards
    ref = Loader(paths, B=3, T=17, bos_id=BOS, seed=3, packed=packed)
    batches, states = [], [ref.state()]
    for _ in range(60):  # long enough to wrap an epoch in packed mode
        batches.append(ref.next())
        states.append(ref.state())
    for k in (0, 5, 37):
        fresh = Loader(paths, B=3, T=17, bos_id=BOS, seed=3, packed=packed, prefetch=4)
        fresh.next()  # move somewhere else first: set_state must discard prefetched batches
        fresh.set_state(states[k])
        for i in range(k, min(k + 15, 60)):
            got = fresh.next()
            assert got is not None and np.array_equal(got, batches[i]), (k, i)
    other = Loader(paths, B=2, T=17, bos_id=BOS, seed=3, packed=packed)
    with pytest.raises(ValueError, match="B=3"):
        other.set_state(states[5])


def test_ranks_split_documents(shards):
    paths, docs = shards
    seen = []
    for rank in range(2):
        loader = Loader(paths, B=1, T=2000, bos_id=BOS, seed=0, rank=rank, world_size=2, buffer_docs=1)
        tags = []
        for _ in range(2):  # 4000 tokens of each rank's ~5000: within the first epoch
            tags += [int(s[1]) for s in segments(loader.next()[0]) if len(s) > 1]
        seen.append(set(tags))
    assert seen[0] and seen[1] and not (seen[0] & seen[1])


def test_sequential_covers_the_stream_exactly(shards):
    paths, docs = shards
    stream = np.concatenate(docs)
    T, B = 16, 3
    loader = Loader(paths, B=B, T=T, bos_id=BOS, packed=False)
    rows = np.concatenate(list(iterate(loader)))
    n_rows = (len(stream) - 1) // T // B * B
    assert rows.shape == (n_rows, T + 1)
    for g in range(n_rows):
        assert np.array_equal(rows[g], stream[g * T:g * T + T + 1])
    assert loader.next() is None and loader.next() is None
    r1 = np.concatenate(list(iterate(Loader(paths, B=2, T=T, bos_id=BOS, packed=False, rank=1, world_size=2))))
    assert np.array_equal(r1[0], stream[T:2 * T + 1]) and np.array_equal(r1[1], stream[3 * T:4 * T + 1])


def test_rejects_bad_shards(tmp_path):
    p = tmp_path / "bad.bin"
    write_shard(str(p), np.array([5, 0, 1], np.int32), VOCAB)
    with pytest.raises(ValueError, match="bad.bin.*does not start with <\\|bos\\|>"):
        Loader([str(p)], B=1, T=4, bos_id=BOS)
    write_shard(str(p), np.array([0, 999], np.int32), VOCAB)
    with pytest.raises(ValueError, match="bad.bin.*vocab size 1000"):
        Loader([str(p)], B=1, T=4, bos_id=BOS, vocab_size=999)
    with pytest.raises(ValueError):
        Loader([], B=1, T=4, bos_id=BOS)
