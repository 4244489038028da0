"""`nanowhale chat` and the text streaming under it: the incremental decoder (deltas never split a UTF-8 character
and join to the whole decoding), stop strings cut exactly (even across tokens), and the REPL driven through a
pseudo-terminal."""

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nanowhale as nw
from nanowhale.chat import chat
from nanowhale.generate import TextAssembler, stream_text
from nanowhale.serve import Engine, Sampling
from scripted_model import SPLIT, script_answer


@pytest.fixture(scope="module")
def run(micro_run):
    return nw.load(micro_run)


def greedy_ids(run, prompt_ids, n):
    out = run.model.generate(np.asarray(prompt_ids, dtype=np.int32)[None], n, temperature=0.0)
    return out[0, len(prompt_ids):].tolist()


@pytest.mark.parametrize("chunk", [1, 5])
def test_stream_text_equals_decoding_the_generated_ids(run, chunk):
    ids = [run.tokenizer.special_id("<|bos|>")] + run.tokenizer.encode("the whale")
    deltas = list(stream_text(run.model, run.tokenizer, ids, 30, chunk=chunk))
    assert deltas[-1].finish_reason == "length" and deltas[-1].tokens == 30
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert "".join(d.text for d in deltas) == run.tokenizer.decode(greedy_ids(run, ids, 30))


def test_stop_strings_and_stop_tokens(run):
    tok = run.tokenizer
    ids = [tok.special_id("<|bos|>")] + tok.encode("the whale")
    full = tok.decode(greedy_ids(run, ids, 30))
    stop = full[7:10]  # some text in the middle, likely across a token boundary
    text = "".join(d.text for d in stream_text(run.model, tok, ids, 30, stop=[stop, "\x00never"]))
    assert text == full[: full.index(stop)]
    gen = greedy_ids(run, ids, 30)
    cut = list(stream_text(run.model, tok, ids, 30, stop_tokens=[gen[4]]))
    assert cut[-1].finish_reason == "stop" and "".join(d.text for d in cut) == tok.decode(gen[: gen.index(gen[4])])


def split_ids(tok, text=SPLIT):
    ids = tok.encode(text)
    assert any(tok.token_bytes(i)[0] >= 0xC0 and len(tok.token_bytes(i)) == 1 for i in ids), "no character is split"
    return ids


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_stream_decoder_pieces_join_to_the_whole_decoding(run, chunk):
    tok = run.tokenizer
    ids = split_ids(tok, SPLIT * 3)
    decoder = nw._C.StreamDecoder(tok)
    pieces = [decoder.push(ids[i: i + chunk]) for i in range(0, len(ids), chunk)] + [decoder.push([], final=True)]
    assert "".join(pieces) == tok.decode(ids) == SPLIT * 3
    assert not any("\ufffd" in p for p in pieces) and sum(1 for p in pieces if p) > 3


def test_stream_decoder_holds_an_unfinished_character(run):
    tok = run.tokenizer
    whale = split_ids(tok, "\U0001F433")
    decoder = nw._C.StreamDecoder(tok)
    assert decoder.push(whale[:1]) == "" and decoder.pending_bytes == len(tok.token_bytes(whale[0]))
    assert decoder.push(whale[1:]) == "\U0001F433" and decoder.pending_bytes == 0
    assert decoder.push(whale[:1], final=True) == "\ufffd" and decoder.pending_bytes == 0  # the end flushes it
    never_starts = next(i for i in range(tok.n_ordinary) if tok.token_bytes(i) == b"\xfc")  # no character does
    assert decoder.push([never_starts]) == "\ufffd" and decoder.pending_bytes == 0  # so it is not held back


def test_stream_decoder_equals_whole_decoding_on_any_bytes(run):
    """Random byte and multi-byte tokens (invalid UTF-8 too: stray continuation bytes, truncated characters,
    invalid lead bytes) in random pieces: the pieces join to the replacement-decoding of all the bytes."""
    tok = run.tokenizer
    singles = [i for i in range(tok.n_ordinary) if len(tok.token_bytes(i)) == 1]
    pool = singles + split_ids(tok) + tok.encode("the whale")
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = [int(i) for i in rng.choice(pool, size=int(rng.integers(1, 24)))]
        cuts = sorted(int(c) for c in rng.integers(0, len(ids) + 1, size=int(rng.integers(0, 6))))
        decoder = nw._C.StreamDecoder(tok)
        pieces = [decoder.push(ids[a:b]) for a, b in zip([0] + cuts, cuts + [len(ids)])]
        assert "".join(pieces) + decoder.push([], final=True) == tok.decode(ids), ids


def test_text_assembler_cuts_at_a_stop_string_of_split_characters(run):
    tok = run.tokenizer
    ids = split_ids(tok, SPLIT * 2)
    text = TextAssembler(tok, stop=["\u65e5\u00e9"])
    deltas = [text.feed([t], i == len(ids) - 1, False) for i, t in enumerate(ids) if not text.finished]
    deltas = [d for d in deltas if d is not None]
    assert "".join(d.text for d in deltas) == SPLIT[: SPLIT.index("\u65e5")]
    assert deltas[-1].finish_reason == "stop" and text.finished
    assert not any("\ufffd" in d.text for d in deltas)


def test_deltas_never_split_a_character(micro_run):
    """A real model scripted to answer with split characters (scripted_model.py), streamed a token at a time."""
    run = nw.load(micro_run)
    prompt = [run.tokenizer.special_id("<|bos|>")] + run.tokenizer.encode("x")
    cycle = script_answer(run.model, run.tokenizer, prompt[-1:], SPLIT)
    assert len(cycle) > len(SPLIT)  # some characters take several tokens
    deltas = list(stream_text(run.model, run.tokenizer, prompt, 2 * len(cycle), chunk=1))
    assert "".join(d.text for d in deltas) == SPLIT * 2 and deltas[-1].finish_reason == "length"
    assert not any("\ufffd" in d.text for d in deltas) and len(deltas) > len(SPLIT)


def test_chat_streams_to_the_terminal(run):
    class Recorder:
        def __init__(self):
            self.writes = []

        def write(self, s):
            self.writes.append(s)

        def flush(self):
            pass

    out = Recorder()
    assert chat(str(run.checkpoint.dir), prompt="the whale swims", temperature=0.0, max_tokens=20, out=out) == 0
    engine = Engine(run)
    want = "".join(d.text for d in engine.chat([{"role": "user", "content": "the whale swims"}],
                                               Sampling(max_tokens=20, temperature=0.0)))
    assert "".join(out.writes) == want + "\n"
    assert len([w for w in out.writes if w]) > 2  # written piece by piece, not at the end


def read_until(fd, marker, timeout=60):
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {marker!r}; got {buf!r}")
        if select.select([fd], [], [], left)[0]:
            try:
                data = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            buf += data
    return buf.decode("utf-8", errors="replace").replace("\r\n", "\n")


def test_repl_through_a_pseudo_terminal(run):
    engine = Engine(run)
    s = Sampling(max_tokens=16, temperature=0.0)
    first = "".join(d.text for d in engine.chat([{"role": "user", "content": "hello whale"}], s))
    second = "".join(d.text for d in engine.chat([{"role": "user", "content": "hello whale"},
                                                   {"role": "assistant", "content": first},
                                                   {"role": "user", "content": "and fish"}], s))
    again = "".join(d.text for d in engine.chat([{"role": "user", "content": "and fish"}], s))
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "nanowhale.cli", "chat", "--ckpt", str(run.checkpoint.dir),
                             "--temperature", "0", "--max-tokens", "16"],
                            stdin=child_fd, stdout=child_fd, stderr=child_fd, close_fds=True,
                            cwd=Path(nw.__file__).resolve().parent.parent)  # the nanowhale this test imported
    os.close(child_fd)
    try:
        assert "/reset" in read_until(main_fd, b"you> ")
        os.write(main_fd, b"hello whale\n")
        assert read_until(main_fd, b"you> ").split("whale> ", 1)[1] == first + "\nyou> "
        os.write(main_fd, b"and fish\n")  # the history is sent along
        assert read_until(main_fd, b"you> ").split("whale> ", 1)[1] == second + "\nyou> "
        os.write(main_fd, b"/reset\n")
        assert "(conversation reset)" in read_until(main_fd, b"you> ")
        os.write(main_fd, b"and fish\n")
        assert read_until(main_fd, b"you> ").split("whale> ", 1)[1] == again + "\nyou> "
        os.write(main_fd, b"\x04")  # Ctrl-D
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main_fd)
