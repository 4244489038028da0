"""`nanowhale chat` and the text streaming under it: deltas never split a UTF-8 character, stop strings cut
exactly (even across tokens), and the REPL driven through a pseudo-terminal."""

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
from nanowhale.generate import stream_text
from nanowhale.serve import Engine, Sampling


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


class FakeTokenizer:
    """Decodes id i to the i-th piece: a 4-byte emoji split over two tokens."""

    pieces = [b"a", "\U0001F433".encode()[:2], "\U0001F433".encode()[2:], b"b"]

    def decode_bytes(self, ids):
        return b"".join(self.pieces[i] for i in ids)


class FakeModel:
    class config:
        seq_len = 32

    def start_generation(self, prompt, n, **kw):
        class Gen:
            out, i, stopped, done = [0, 1, 2, 3], 0, [False], False

            @property
            def produced(self):
                return self.i

            def step(self, k):
                piece = self.out[self.i: self.i + k]
                self.i += len(piece)
                self.done = self.i == len(self.out)
                return np.asarray([piece], dtype=np.int32)
        return Gen()


def test_deltas_never_split_a_character():
    deltas = [d.text for d in stream_text(FakeModel(), FakeTokenizer(), [0], 4, chunk=1)]
    assert deltas == ["a", "\U0001F433", "b"]
    assert all("\ufffd" not in d for d in deltas)


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
