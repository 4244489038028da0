"""BPE tokenizer: training, round trips (hypothesis), special tokens, files, and parity with tiktoken."""

import random

import numpy as np
import pytest

from nanowhale.data import Tokenizer, default_special_tokens, to_tiktoken, train_tokenizer

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "It's a truth universally acknowledged, that a single man in possession of a good fortune...",
    "Numbers: 1234567890, 3.14159, 2024-01-01; code: for (int i = 0; i < n; ++i) { x += i; }\n",
    "Ünïcödé façade naïve café — 日本語のテキスト、中文文本。한국어 텍스트! 👋🏽👨‍👩‍👧‍👦",
    "    indented\n\n\n\ttabs\r\n  and   spaces   ",
]


def corpus(n=400, seed=0):
    rng = random.Random(seed)
    words = " ".join(CORPUS).split(" ")
    syllables = ["ka", "lo", "mi", "ne", "st", "qu", "ré", "中", "ß", "th", "ing", "42", "7"]
    words += ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(500)]
    return [rng.choice(CORPUS) + " ".join(rng.choice(words) for _ in range(60)) for _ in range(n)]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(corpus(), vocab_size=256 + 16 + 500, num_threads=2)


def test_vocab_layout(tok):
    assert tok.vocab_size == 256 + 16 + 500
    assert tok.n_ordinary == 256 + 500
    assert list(tok.special_tokens) == default_special_tokens()
    assert tok.special_id("<|bos|>") == tok.n_ordinary
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (tok.vocab_size,)
    assert (lengths[tok.n_ordinary:] == 0).all()
    assert all(lengths[i] == len(tok.token_bytes(i)) for i in range(tok.n_ordinary))


def test_training_is_deterministic_and_streaming_matches_batch(tok):
    docs = corpus()
    again = Tokenizer.train(docs, vocab_size=tok.vocab_size, num_threads=1)
    assert again.mergeable_ranks() == tok.mergeable_ranks()
    small_batches = train_tokenizer(iter(docs), vocab_size=tok.vocab_size, batch_bytes=1000)
    assert small_batches.fingerprint == tok.fingerprint


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_roundtrip_arbitrary_text(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert sum(tok.token_byte_lengths()[ids]) == len(text.encode("utf-8"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["<|bos|>", "<|user_start|>", "<|", "|>", "bos", " ", "a"]), max_size=12))
def test_specials_only_when_allowed(tok, parts):
    text = "".join(parts)
    plain = tok.encode(text)
    assert max(plain, default=0) < tok.n_ordinary
    assert tok.decode(plain) == text
    allowed = tok.encode(text, allowed_special="all")
    assert tok.decode(allowed) == text
    assert allowed.count(tok.special_id("<|bos|>")) == text.count("<|bos|>")
    only_user = tok.encode(text, allowed_special={"<|user_start|>"})
    assert tok.special_id("<|bos|>") not in only_user


def test_tiktoken_parity(tok):
    tiktoken = pytest.importorskip("tiktoken")
    enc = to_tiktoken(tok)
    rng = random.Random(3)
    texts = corpus(50, seed=9) + CORPUS + [
        "a" * 5000, " " * 3000 + "x", "ab" * 2000, "\n" * 1000, "1" * 999, "👋" * 300,
        "<|bos|>hello<|user_start|>", "".join(chr(rng.randint(32, 0x3000)) for _ in range(3000)),
    ]
    for t in texts:
        assert tok.encode(t) == enc.encode_ordinary(t)
        assert tok.encode(t, allowed_special="all") == enc.encode(t, allowed_special="all")
    assert tok.encode_batch(texts, num_threads=2) == enc.encode_ordinary_batch(texts)
    big = "\n".join(texts * 10)
    assert tok.encode_array(big, num_threads=2).tolist() == enc.encode_ordinary(big)


def test_tiktoken_ranks_import_and_foreign_rank_order(tmp_path, tok):
    # A vocabulary whose byte tokens are not at ids 0..255 (as in GPT-4's) still encodes like tiktoken.
    tiktoken = pytest.importorskip("tiktoken")
    ranks = tok.mergeable_ranks()
    order = sorted(ranks, key=lambda b: (len(b) > 1, ranks[b] if len(b) > 1 else (b[0] * 37) % 256))
    shuffled = {b: i for i, b in enumerate(order)}
    other = Tokenizer.from_ranks(shuffled, {"<|bos|>": len(shuffled)})
    enc = tiktoken.Encoding("shuffled", pat_str=tok_pattern(), mergeable_ranks=shuffled, special_tokens={})
    for t in corpus(30, seed=5):
        assert other.encode(t) == enc.encode_ordinary(t)
    path = tmp_path / "v.tiktoken"
    tok.export_tiktoken(str(path))
    from tiktoken.load import load_tiktoken_bpe

    assert load_tiktoken_bpe(str(path)) == ranks
    back = Tokenizer.import_tiktoken(str(path))
    assert back.fingerprint == tok.fingerprint


def tok_pattern():
    from nanowhale.data import SPLIT_PATTERN

    return SPLIT_PATTERN


def test_save_load(tmp_path, tok):
    path = tmp_path / "t.nwtok"
    tok.save(str(path))
    back = Tokenizer.load(str(path))
    assert back.fingerprint == tok.fingerprint
    assert back.encode(CORPUS[3]) == tok.encode(CORPUS[3])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:100]))
    with pytest.raises(ValueError, match="truncated"):
        Tokenizer.load(str(path))
    with pytest.raises(ValueError, match="cannot open"):
        Tokenizer.load(str(tmp_path / "missing"))


def test_errors(tok):
    with pytest.raises(ValueError):
        Tokenizer.train(["abc"], vocab_size=100)
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])
    with pytest.raises(UnicodeDecodeError):  # errors= is the codec's: "strict" refuses a byte no character starts with
        tok.decode([next(i for i in range(tok.n_ordinary) if tok.token_bytes(i) == b"\xfc")], errors="strict")
    with pytest.raises(ValueError):
        tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError):
        Tokenizer.from_ranks({b"a": 0}, {})
    assert np.asarray(tok.encode_array("hello world")).dtype == np.int32


@pytest.mark.parametrize("seed", range(12))
def test_long_runs_match_tiktoken(seed):
    # Long runs of a repeated unit take the linear-time path (bpe_encode.cpp, encode_periodic); vocabularies
    # of run tokens in random rank order (3 and 5 spaces before 4, ...) must still give exact BPE ids.
    rng = random.Random(seed)
    unit = [b" ", b"\n", b"a", b"ab", b"\xc3\xa9", b"xyz"][seed % 6]
    ranks = {bytes([i]): i for i in range(256)}
    for _ in range(rng.randint(3, 30)):
        k = rng.randint(2, 12)
        ranks.setdefault((unit * k)[:rng.randint(2, k * len(unit))], len(ranks))
    tok = Tokenizer.from_ranks(ranks, {})
    enc = to_tiktoken(tok)
    window = max(1024, 2 * max(map(len, ranks)) ** 2)  # runs from 4 windows long take the fast path
    for n in (4 * window + 64 + rng.randint(0, 50), 6 * window + rng.randint(0, 999)):
        text = (unit * n)[:n - n % len(unit)].decode()
        assert tok.encode(text) == enc.encode_ordinary(text)
