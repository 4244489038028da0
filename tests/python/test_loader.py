"""The C++ loader: best-fit packing of every token (long documents split across rows), sequential rows,
determinism, exact resume, ranks."""

import numpy as np
import pytest

from nanowhale.data.shards import Loader, iterate, read_shard, write_shard

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


# Documents of 20..4000 tokens whose non-BOS ids are all distinct, so every token's (document, offset) is known
# from its id. uint32 shards (vocab > 65536).
BIG_VOCAB = 1 << 20


def unique_docs(n, seed=0, lo=20, hi=4000):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, n)
    ids = 1 + rng.permutation(int(lengths.sum()))
    docs, at = [], 0
    for L in lengths:
        docs.append(np.concatenate([[BOS], ids[at:at + L - 1]]).astype(np.int32))
        at += L - 1
    return docs


@pytest.fixture
def long_shards(tmp_path):
    docs = unique_docs(40)
    paths = []
    for k, chunk in enumerate([docs[:25], docs[25:27], docs[27:]]):
        p = tmp_path / f"long_{k:06d}.bin"
        write_shard(str(p), np.concatenate(chunk), BIG_VOCAB)
        paths.append(str(p))
    where = {}  # id -> (document, offset)
    for d, doc in enumerate(docs):
        for off, t in enumerate(doc[1:], start=1):
            where[int(t)] = (d, off)
    return paths, docs, where


STATE_EPOCH, STATE_FIELDS = 8, 15  # loader state layout (csrc/data/loader.cpp): the epoch field; then pieces


def by_epoch(loader, n_epochs):
    """Per epoch e < n_epochs: the content tokens (no <|bos|>) of the batches made wholly within epoch e, and
    those of the batch that crosses into epoch e + 1."""
    pure, crossing = [[] for _ in range(n_epochs)], [None] * n_epochs
    while True:
        batch = loader.next().ravel()
        e = int(loader.state()[STATE_EPOCH])
        batch = batch[batch != BOS]
        if e >= n_epochs:
            crossing[n_epochs - 1] = batch
            return [np.concatenate(p) for p in pure], crossing
        if e > 0 and crossing[e - 1] is None:
            crossing[e - 1] = batch
        else:
            pure[e].append(batch)


def test_every_token_once_per_epoch(long_shards):
    paths, docs, _ = long_shards
    ids = np.concatenate([d[1:] for d in docs])
    B, T = 4, 63
    loader = Loader(paths, B=B, T=T, bos_id=BOS, vocab_size=BIG_VOCAB, seed=5)
    pure, crossing = by_epoch(loader, 2)
    for e in range(2):
        values, counts = np.unique(pure[e], return_counts=True)
        assert counts.max() == 1, f"epoch {e}: a token was trained on twice"
        assert np.isin(values, ids).all()
        assert len(ids) - len(values) <= B * (T + 1), "more than the crossing batch is missing"
        assert len(values) >= 0.99 * len(ids)
        assert np.union1d(values, crossing[e]).size == len(ids), f"epoch {e} left tokens out"
    assert 1.99 <= loader.epoch <= 2.05


def test_rows_are_documents_in_order_split_across_rows(long_shards):
    paths, docs, where = long_shards
    loader = Loader(paths, B=3, T=100, bos_id=BOS, vocab_size=BIG_VOCAB, seed=2)
    next_offset = {}  # document -> the offset its next token must have
    n_bos = n_continuations = 0
    for _ in range(120):
        for row in loader.next():
            prev = None  # (document, offset) of the previous token in the row, or "bos"
            for t in row:
                if t == BOS:
                    n_bos += 1
                    prev = "bos"
                    continue
                d, off = where[int(t)]
                if prev == "bos":
                    assert off == 1, "a <|bos|> stands before a token that does not start its document"
                elif prev != (d, off - 1):  # a piece starts here: the rest of a split document
                    assert off > 1, "a document's first token appears without its <|bos|>"
                    n_continuations += 1
                assert next_offset.get(d, 1) == off, "a document's tokens were skipped or reordered"
                next_offset[d] = off + 1
                prev = (d, off)
    assert n_bos > 10 and n_continuations > 10  # both kinds of piece boundaries were exercised


def test_ranks_cover_the_split_without_overlap(long_shards):
    paths, docs, _ = long_shards
    ids = np.concatenate([d[1:] for d in docs])
    pure, crossing = [], []
    for rank in range(2):
        loader = Loader(paths, B=2, T=63, bos_id=BOS, vocab_size=BIG_VOCAB, seed=1, rank=rank, world_size=2)
        p, c = by_epoch(loader, 1)
        assert np.unique(p[0]).size == p[0].size
        pure.append(p[0])
        crossing.append(c[0])
    assert not np.intersect1d(pure[0], pure[1]).size, "two ranks trained on the same tokens in one epoch"
    assert np.union1d(pure[0], pure[1]).size >= 0.99 * ids.size
    assert np.union1d(np.union1d(pure[0], pure[1]), np.concatenate(crossing)).size == ids.size


def test_resume_mid_document_with_prefetch(long_shards):
    paths, _, _ = long_shards
    shard_tokens = [read_shard(p) for p in paths]
    ref = Loader(paths, B=2, T=50, bos_id=BOS, vocab_size=BIG_VOCAB, seed=4)
    batches, states = [], [ref.state()]
    for _ in range(200):
        batches.append(ref.next())
        states.append(ref.state())
    for k in (1, 57, 133):
        pieces = states[k][STATE_FIELDS:].reshape(-1, 4)  # (shard, start, len, seq)
        assert any(shard_tokens[sh][st] != BOS for sh, st, _, _ in pieces), "no split document is waiting"
        fresh = Loader(paths, B=2, T=50, bos_id=BOS, vocab_size=BIG_VOCAB, seed=4, prefetch=4)
        for _ in range(3):
            fresh.next()  # prefetching ahead: set_state must discard what is queued
        fresh.set_state(states[k])
        for i in range(k, min(k + 40, 200)):
            assert np.array_equal(fresh.next(), batches[i]), (k, i)


def test_old_state_version_is_refused(long_shards):
    paths, _, _ = long_shards
    loader = Loader(paths, B=2, T=50, bos_id=BOS, vocab_size=BIG_VOCAB)
    old = loader.state()
    old[0] = 1
    with pytest.raises(ValueError, match="version 1.*cannot be resumed"):
        loader.set_state(old)


def test_huge_candidate_buffer_is_bounded_by_the_epoch(long_shards):
    paths, docs, _ = long_shards
    loader = Loader(paths, B=2, T=50, bos_id=BOS, vocab_size=BIG_VOCAB, buffer_docs=10**12)
    loader.next()
    assert (len(loader.state()) - STATE_FIELDS) // 4 <= len(docs) + 2


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
