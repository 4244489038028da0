"""Token shards: round trips, dtype choice, atomic writes and clear rejection of bad files."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanowhale.data.shards import read_shard, read_shard_header, write_shard


def test_roundtrip_uint16_and_uint32(tmp_path):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 65536, 1000).astype(np.int32)
    write_shard(str(tmp_path / "a.bin"), small, 65536)
    h = read_shard_header(str(tmp_path / "a.bin"))
    assert h == {"version": 1, "vocab_size": 65536, "token_bytes": 2, "n_tokens": 1000}
    assert (tmp_path / "a.bin").stat().st_size == 64 + 2 * 1000
    assert np.array_equal(read_shard(str(tmp_path / "a.bin"), 65536), small)
    big = rng.integers(0, 100000, 777).astype(np.int64)
    write_shard(str(tmp_path / "b.bin"), big, 100000)
    assert read_shard_header(str(tmp_path / "b.bin"))["token_bytes"] == 4
    assert np.array_equal(read_shard(str(tmp_path / "b.bin")), big)
    write_shard(str(tmp_path / "e.bin"), np.zeros(0, np.int32), 300)
    assert read_shard(str(tmp_path / "e.bin"), 300).size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "e.bin"]  # no temp files left


def test_write_rejects_out_of_vocab(tmp_path):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        write_shard(str(tmp_path / "x.bin"), np.array([1, 2, 300]), 300)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        write_shard(str(tmp_path / "x.bin"), np.array([-1]), 300)
    assert not list(tmp_path.iterdir())


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.bin"
    write_shard(str(path), np.arange(100, dtype=np.int32), 1000)
    return path


def corrupt(path, offset, data):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_bad_magic(good):
    corrupt(good, 0, b"XXTOKENS")
    with pytest.raises(ValueError, match=f"{good}.*bad magic"):
        read_shard(str(good))


def test_bad_version(good):
    corrupt(good, 8, (7).to_bytes(4, "little"))
    with pytest.raises(ValueError, match=f"{good}.*version 7"):
        read_shard(str(good))


def test_truncated(good):
    good.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(ValueError, match=f"{good}.*truncated"):
        read_shard(str(good))
    good.write_bytes(good.read_bytes()[:10])
    with pytest.raises(ValueError, match=f"{good}.*truncated"):
        read_shard_header(str(good))


def test_token_outside_tokenizer_vocab(good):
    assert read_shard(str(good), 1000).max() == 99
    corrupt(good, 64 + 2 * 50, (1500).to_bytes(2, "little"))  # a corrupt body: an id past the vocabulary
    with pytest.raises(ValueError, match=f"{good}.*token id 1500.*vocabulary of 1000"):
        read_shard(str(good), 1000)
    with pytest.raises(ValueError, match=f"{good}.*vocab size 1000"):
        read_shard(str(good), 500)  # written for a larger vocabulary than the tokenizer's


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="missing.bin"):
        read_shard(str(tmp_path / "missing.bin"))


def run_isolated(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter, so a crash (segfault) fails the test instead of killing pytest. It
    starts beside the imported package, so `-c` imports the same nanowhale (in CI the installed one)."""
    import nanowhale

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=Path(nanowhale.__file__).resolve().parent.parent)


@pytest.mark.parametrize("vocab, wrap", [(1000, 2**63), (100000, 2**62), (100000, 3 * 2**62)])
def test_token_count_that_wraps_the_size_check(tmp_path, vocab, wrap):
    # n + 2^63 two-byte tokens (or n + k*2^62 four-byte ones) is n tokens' worth of bytes modulo 2^64.
    path = tmp_path / "wrap.bin"
    write_shard(str(path), np.zeros(100, np.int32), vocab)
    corrupt(path, 24, (100 + wrap).to_bytes(8, "little"))
    with pytest.raises(ValueError, match=f"{path}.*header says {100 + wrap}"):
        read_shard_header(str(path))
    with pytest.raises(ValueError, match=f"{path}.*header says"):
        read_shard(str(path))
    for packed in (True, False):  # the loader walked 2^63 tokens of a small map: SIGSEGV
        r = run_isolated(f"from nanowhale.data.shards import Loader\n"
                         f"try:\n    Loader([{str(path)!r}], 2, 8, bos_id=0, packed={packed}).next()\n"
                         f"except ValueError as e:\n    print('ValueError', e)\n")
        assert r.returncode == 0 and f"ValueError shard {path}" in r.stdout, (r.returncode, r.stdout, r.stderr)


def test_ids_checked_against_the_header_vocab(good):
    corrupt(good, 12, (50).to_bytes(4, "little"))  # the header claims vocab 50; the file holds ids up to 99
    with pytest.raises(ValueError, match=f"{good}.*token id 99.*vocabulary of its header, 50"):
        read_shard(str(good))
    with pytest.raises(ValueError, match=f"{good}.*token id 99.*vocabulary of its header, 50"):
        read_shard(str(good), 1000)


def test_reserved_header_bytes_must_be_zero(good):
    corrupt(good, 40, b"\x01")
    with pytest.raises(ValueError, match=f"{good}.*nonzero reserved header byte at offset 40"):
        read_shard_header(str(good))


def test_header_vocab_zero_or_beyond_int32(good):
    corrupt(good, 12, (0).to_bytes(4, "little"))
    with pytest.raises(ValueError, match=f"{good}.*vocab size 0"):
        read_shard_header(str(good))
    corrupt(good, 12, (2**31).to_bytes(4, "little"))
    corrupt(good, 16, (4).to_bytes(4, "little"))
    with pytest.raises(ValueError, match=f"{good}.*vocab size 2147483648"):
        read_shard_header(str(good))
