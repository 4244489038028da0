"""Token shards: round trips, dtype choice, atomic writes and clear rejection of bad files."""

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
