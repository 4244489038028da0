"""Document sources for `nanowhale data prepare`: text files and directories, JSONL (optionally gzipped),
parquet (as FineWeb-Edu / ClimbMix ship), the offline default corpus, and resumable checked downloads.

Every source yields documents (str) in a deterministic order, so a document's index identifies it
across runs (preparation resumes by index).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sysconfig
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STDLIB = "stdlib"  # the offline default corpus: the Python standard library's own sources and docs
TEXT_FIELD = "text"


def stdlib_files() -> list[Path]:
    """The standard library's .py sources (docstrings and comments are English prose; code is text too).

    Present on every machine with Python, so the main job needs no network. Sorted for determinism;
    site-packages and bytecode caches are excluded.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if "site-packages" not in p.parts and "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _jsonl(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)[TEXT_FIELD]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: expected a JSON object with a '{TEXT_FIELD}' field ({e})") from None
            if not isinstance(text, str):
                raise ValueError(f"{path}:{n}: '{TEXT_FIELD}' is not a string")
            yield text


def _parquet(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"reading {path} needs pyarrow: pip install 'nanowhale[parquet]' (or pyarrow)") from None
    pf = pq.ParquetFile(path)
    if TEXT_FIELD not in pf.schema_arrow.names:
        raise ValueError(f"{path}: no '{TEXT_FIELD}' column (columns: {pf.schema_arrow.names})")
    for i in range(pf.num_row_groups):
        for text in pf.read_row_group(i, columns=[TEXT_FIELD]).column(0).to_pylist():
            if text is not None:
                yield text


def _is_jsonl(p: Path) -> bool:
    return p.name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson"))


def files_of(source: str | Path) -> list[Path]:
    """The files a source names, in document order."""
    if str(source) == STDLIB:
        return stdlib_files()
    p = Path(source)
    if p.is_dir():
        return sorted((f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")),
                      key=lambda f: f.relative_to(p).as_posix())
    if not p.exists():
        raise ValueError(f"input {source} does not exist")
    return [p]


def documents_of_file(path: Path) -> Iterator[str]:
    if _is_jsonl(path):
        yield from _jsonl(path)
    elif path.suffix == ".parquet":
        yield from _parquet(path)
    else:
        yield _read_text(path)


def iter_documents(sources: list[str]) -> Iterator[str]:
    """All documents of all sources, in order. Empty documents are skipped."""
    for source in sources:
        for f in files_of(source):
            for doc in documents_of_file(f):
                if doc:
                    yield doc


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest_dir: str | Path, sha256: str | None = None, chunk: int = 1 << 20,
             timeout: float = 60.0) -> Path:
    """Downloads `url` into dest_dir, resuming a partial download (HTTP Range) and checking sha256.

    The file is written as NAME.part and renamed to NAME only when complete and (if sha256 is given)
    verified, so a final name always holds a whole, checked file. A mismatch deletes the partial file and
    raises ValueError. `url` may carry the checksum as a fragment: https://host/f.parquet#sha256=HEX.
    """
    if "#sha256=" in url:
        url, sha256 = url.split("#sha256=", 1)
    name = Path(urllib.request.urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot name a file after the URL {url}")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final, part = dest_dir / name, dest_dir / (name + ".part")
    if final.exists() and (sha256 is None or sha256_of(final) == sha256.lower()):
        return final
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416:  # 416: the part file is already complete
            raise ValueError(f"downloading {url}: HTTP {e.code}") from None
        resp = None
    except urllib.error.URLError as e:
        raise ValueError(f"downloading {url}: {e.reason}") from None
    if resp is not None:
        with resp:
            mode = "ab" if have and resp.status == 206 else "wb"  # a server ignoring Range restarts us
            with open(part, mode) as fh:
                while data := resp.read(chunk):
                    fh.write(data)
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256.lower():
            part.unlink()
            raise ValueError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}")
    os.replace(part, final)
    return final


__all__ = ["STDLIB", "documents_of_file", "download", "files_of", "iter_documents", "sha256_of", "stdlib_files"]
