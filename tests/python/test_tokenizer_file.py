"""The .nwtok file: checksum, strict line-by-line parsing, errors that name the file (csrc/data/tokenizer_file.cpp)."""

import pytest

from nanowhale.data import Tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tok():
    docs = [f"the {i} quick brown fox jumps over the lazy dog {i * 7}" for i in range(200)]
    return train_tokenizer(docs, vocab_size=256 + 16 + 40, special_tokens=["<|bos|>", "<|end|>"], num_threads=1)


@pytest.fixture
def saved(tmp_path, tok):
    path = tmp_path / "t.nwtok"
    tok.save(str(path))
    return path


def as_version_1(raw: bytes) -> bytes:
    """The same tokenizer in the old format: version 1, no checksum line."""
    lines = raw.split(b"\n")[:-2]  # drop the checksum line (and the empty piece after the final newline)
    lines[0] = b"nanowhale-tokenizer 1"
    return b"\n".join(lines) + b"\n"


def test_version_2_has_a_checksum_and_round_trips(saved, tok):
    lines = saved.read_bytes().split(b"\n")
    assert lines[0] == b"nanowhale-tokenizer 2" and lines[-2].startswith(b"checksum ") and lines[-1] == b""
    assert Tokenizer.load(str(saved)).fingerprint == tok.fingerprint


def test_version_1_still_loads(saved, tok):
    saved.write_bytes(as_version_1(saved.read_bytes()))
    assert Tokenizer.load(str(saved)).fingerprint == tok.fingerprint


def test_checksum_catches_an_edit(saved):
    raw = bytearray(saved.read_bytes())
    at = raw.index(b"\n", raw.index(b"specials")) + 1  # the first byte of token 0's base64
    raw[at] = ord("B") if raw[at] != ord("B") else ord("C")
    saved.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{saved}: checksum mismatch.*re-save"):
        Tokenizer.load(str(saved))


def test_non_utf8_line_names_the_file(saved):
    # main raised a bare UnicodeDecodeError (the bad bytes went into the message).
    lines = as_version_1(saved.read_bytes()).split(b"\n")
    lines[10] = b"\xff\xfe\x80 6"
    saved.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=rf"{saved}: line 11.*\\xff\\xfe\\x80"):
        Tokenizer.load(str(saved))


def test_non_utf8_special_name(saved, tok):
    lines = as_version_1(saved.read_bytes()).split(b"\n")
    lines[-2] = b"/w== " + str(tok.vocab_size - 1).encode()  # base64 of b"\xff"
    saved.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=f"{saved}: line {len(lines) - 1}.*not valid UTF-8"):
        Tokenizer.load(str(saved))


@pytest.mark.parametrize("line, value", [(2, b"tokens 256"), (3, b"specials 0"), (2, b"tokens 300x"),
                                         (3, b"specials -1"), (2, b"tokens 99999999999999")])
def test_header_counts_must_match_the_file(saved, line, value):
    # main trusted the counts: 'tokens 256' loaded a vocabulary without <|bos|>, 'specials 0' dropped them.
    lines = as_version_1(saved.read_bytes()).split(b"\n")
    lines[line] = value
    saved.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=str(saved)):
        Tokenizer.load(str(saved))


@pytest.mark.parametrize("edit", ["trailing", "missing", "no_newline", "swapped_ids"])
def test_missing_trailing_or_reordered_lines(saved, edit):
    lines = as_version_1(saved.read_bytes()).split(b"\n")[:-1]
    if edit == "trailing":
        lines.append(b"QQ== 999")
    elif edit == "missing":
        del lines[20]
    elif edit == "swapped_ids":
        lines[20], lines[21] = lines[21], lines[20]
    raw = b"\n".join(lines) + (b"" if edit == "no_newline" else b"\n")
    saved.write_bytes(raw)
    with pytest.raises(ValueError, match=str(saved)):
        Tokenizer.load(str(saved))
