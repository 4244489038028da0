"""`nanowhale data prepare`: inputs (text, JSONL(.gz), parquet), downloads with resume and checksum
against a local HTTP server, BOS per document, and resuming an interrupted run without duplicates."""

import gzip
import hashlib
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from nanowhale.cli import main
from nanowhale.data import Tokenizer
from nanowhale.data.prepare import prepare
from nanowhale.data.shards import read_shard, shard_paths
from nanowhale.data.sources import download, iter_documents, stdlib_files


def docs(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "Ω", "中文", "it's", "42", "\n", "x"]
    return [f"doc {i}: " + " ".join(rng.choice(words, rng.integers(5, 80))) for i in range(n)]


def split_docs(shards, bos):
    """Documents (as token arrays without BOS) of the concatenated shards; checks BOS starts each shard."""
    out = []
    for p in shards:
        t = read_shard(p)
        assert t[0] == bos
        starts = list(np.flatnonzero(t == bos)) + [len(t)]
        out += [t[a + 1:b] for a, b in zip(starts, starts[1:])]
    return out


def test_jsonl_gz_text_and_dirs(tmp_path):
    d = docs(60)
    (tmp_path / "in").mkdir()
    with gzip.open(tmp_path / "in" / "a.jsonl.gz", "wt") as f:
        for t in d[:40]:
            f.write(json.dumps({"text": t, "title": "x"}) + "\n")
    for i, t in enumerate(d[40:]):
        (tmp_path / "in" / f"b{i:02d}.txt").write_text(t)
    assert list(iter_documents([str(tmp_path / "in")])) == d
    state = prepare([str(tmp_path / "in")], tmp_path / "out", vocab_size=400, shard_tokens=500, val_every=10,
                    progress=False)
    assert state["done"]
    tok = Tokenizer.load(str(tmp_path / "out" / "tokenizer.nwtok"))
    bos = tok.special_id("<|bos|>")
    train = split_docs(shard_paths(tmp_path / "out", "train"), bos)
    val = split_docs(shard_paths(tmp_path / "out", "val"), bos)
    assert [tok.decode(x) for x in val] == d[::10]
    assert [tok.decode(x) for x in train] == [t for i, t in enumerate(d) if i % 10]
    assert len(shard_paths(tmp_path / "out", "train")) > 1


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    d = docs(30, seed=1)
    pq.write_table(pa.table({"text": d, "id": list(range(30))}), tmp_path / "f.parquet", row_group_size=7)
    assert list(iter_documents([str(tmp_path / "f.parquet")])) == d
    pq.write_table(pa.table({"body": d}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no 'text' column"):
        list(iter_documents([str(tmp_path / "bad.parquet")]))


def test_resume_after_interruption_is_identical(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs(200, seed=2)))
    kw = dict(vocab_size=500, shard_tokens=700, val_every=7, progress=False)
    prepare([str(src)], tmp_path / "full", **kw)
    s1 = prepare([str(src)], tmp_path / "resumed", _stop_after_shards=3, **kw)
    assert not s1["done"] and sum(s1["shards"].values()) == 3
    s2 = prepare([str(src)], tmp_path / "resumed", _stop_after_shards=2, **kw)
    assert not s2["done"]
    prepare([str(src)], tmp_path / "resumed", **kw)
    full = sorted(p.name for p in (tmp_path / "full").glob("*.bin"))
    assert full == sorted(p.name for p in (tmp_path / "resumed").glob("*.bin"))
    for name in full:
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name
    with pytest.raises(ValueError, match="different settings"):
        prepare([str(src)], tmp_path / "resumed", **{**kw, "val_every": 5})


def test_reuse_tokenizer_and_cli(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("\n".join(docs(50)))
    tok = Tokenizer.train(docs(50), vocab_size=300)
    tok.save(str(tmp_path / "tok.nwtok"))
    rc = main(["data", "prepare", str(tmp_path / "a.txt"), "--out", str(tmp_path / "o"), "--tokenizer",
               str(tmp_path / "tok.nwtok"), "--no-progress", "--val-every", "2"])
    assert rc == 0 and "train" in capsys.readouterr().out
    assert Tokenizer.load(str(tmp_path / "o" / "tokenizer.nwtok")).fingerprint == tok.fingerprint
    assert main(["data", "prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_stdlib_default_corpus_exists():
    files = stdlib_files()
    assert len(files) > 100 and any(f.name == "argparse.py" for f in files)
    assert files == stdlib_files() and len(set(files)) == len(files)  # a stable order


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (the standard handler ignores Range)."""

    ranges_seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        RangeHandler.ranges_seen.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.ranges_seen = []
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_resume_and_checksum(tmp_path, server):
    root, base = server
    payload = "".join(json.dumps({"text": t}) + "\n" for t in docs(100)).encode()
    (root / "d.jsonl").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "d.jsonl.part").write_bytes(payload[:1000])  # an interrupted earlier download
    got = download(f"{base}/d.jsonl", dest, sha256=sha)
    assert got.read_bytes() == payload and not (dest / "d.jsonl.part").exists()
    assert RangeHandler.ranges_seen == ["bytes=1000-"]  # only the rest was fetched
    assert download(f"{base}/d.jsonl#sha256={sha}", dest) == got  # complete and verified: no request
    assert len(RangeHandler.ranges_seen) == 1
    with pytest.raises(ValueError, match="checksum mismatch"):
        download(f"{base}/d.jsonl", tmp_path / "dl2", sha256="0" * 64)
    assert not (tmp_path / "dl2" / "d.jsonl").exists() and not (tmp_path / "dl2" / "d.jsonl.part").exists()
    with pytest.raises(ValueError, match="HTTP 404"):
        download(f"{base}/nothing.jsonl", tmp_path / "dl3")
    state = prepare(out_dir=tmp_path / "out", urls=[f"{base}/d.jsonl#sha256={sha}"], vocab_size=300,
                    shard_tokens=10**6, val_every=10, progress=False)
    assert state["done"] and state["shards"] == {"train": 1, "val": 1}
