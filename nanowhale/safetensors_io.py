"""The safetensors file format, written and read with NumPy (no dependency; the `safetensors` library reads it).

Layout: an 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
"__metadata__": {str: str}} padded with spaces to a multiple of 8, then the tensors' bytes back to back
(little-endian, C order), offsets relative to the end of the header.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
          "BOOL": np.bool_}
NAMES = {np.dtype(v).str: k for k, v in DTYPES.items()}


class FormatError(ValueError):
    pass


def serialize(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
    """(header bytes, list of tensor byte buffers) for `tensors` in insertion order."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset, blobs = 0, []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        key = np.dtype(arr.dtype).str.replace(">", "<").replace("|", "<")
        kind = NAMES.get(key) or NAMES.get(np.dtype(arr.dtype).str)
        if kind is None:
            raise TypeError(f"{name}: dtype {arr.dtype} has no safetensors name")
        header[name] = {"dtype": kind, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        blobs.append(memoryview(arr).cast("B"))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, blobs


def write(f, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None, on_half=None) -> None:
    """Writes to an open binary file; on_half() is called halfway (tests interrupt a write there)."""
    head, blobs = serialize(tensors, metadata)
    f.write(head)
    for i, b in enumerate(blobs):
        if on_half is not None and i == len(blobs) // 2:
            f.flush()
            on_half()
        f.write(b)


def _no_duplicate_keys(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise FormatError(f"key {k!r} appears twice")
        d[k] = v
    return d


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _entry(path, name: str, info) -> tuple[np.dtype, tuple, int, int]:
    """(dtype, shape, begin, end) of one header entry, every field checked."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(f"{path}: entry {name!r} must have exactly dtype, shape and data_offsets")
    if not isinstance(info["dtype"], str) or info["dtype"] not in DTYPES:
        raise FormatError(f"{path}: entry {name!r} has unknown dtype {info['dtype']!r}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
        raise FormatError(f"{path}: entry {name!r} has a bad shape {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(x) for x in offsets):
        raise FormatError(f"{path}: entry {name!r} has bad data_offsets {offsets!r}")
    return np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"), tuple(shape), offsets[0], offsets[1]


def read(path: str | Path, layout: dict[str, tuple[np.dtype, tuple]] | None = None
         ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata); FormatError naming the file and entry if anything is malformed.

    One validation pass: a well-formed JSON header without repeated keys; every entry's dtype, shape and
    byte range (sizes in Python ints, which cannot overflow); the ranges disjoint and covering the data
    exactly. `layout` {name: (dtype, shape)} (the model's own) also refuses unknown or missing tensors and
    any dtype or shape that differs from it.
    """
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise FormatError(f"{path}: truncated ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise FormatError(f"{path}: truncated (header of {n} bytes, file of {len(data)})")
    try:
        header = json.loads(data[8:8 + n], object_pairs_hook=_no_duplicate_keys)
    except FormatError as e:
        raise FormatError(f"{path}: corrupt header ({e})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise FormatError(f"{path}: corrupt header ({e})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: corrupt header (not a JSON object)")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError(f"{path}: __metadata__ must map strings to strings")
    body = memoryview(data)[8 + n:]
    entries = {name: _entry(path, name, info) for name, info in header.items()}
    for name, (dtype, shape, a, b) in entries.items():
        if not 0 <= a <= b <= len(body) or b - a != math.prod(shape) * dtype.itemsize:
            raise FormatError(f"{path}: entry {name!r}: bytes [{a}, {b}) do not fit {math.prod(shape)} "
                              f"{dtype.name} values inside the {len(body)} bytes of data (truncated?)")
    end = 0
    for name, (_, _, a, b) in sorted(entries.items(), key=lambda e: (e[1][2], e[1][3])):
        if a != end:
            raise FormatError(f"{path}: entry {name!r} starts at byte {a}, but the previous data ends at {end} "
                              "(overlapping tensors or a gap)")
        end = b
    if end != len(body):
        raise FormatError(f"{path}: {len(body) - end} unexpected bytes after the tensors")
    if layout is not None:
        _check_layout(path, entries, layout)
    out = {name: np.frombuffer(body[a:b], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
           for name, (dtype, shape, a, b) in entries.items()}
    return out, meta


def _check_layout(path, entries: dict, layout: dict) -> None:
    def few(names):
        names = sorted(names)
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    unknown, missing = set(entries) - set(layout), set(layout) - set(entries)
    if missing:
        raise FormatError(f"{path}: lacks {few(missing)} (a different model configuration?)")
    if unknown:
        raise FormatError(f"{path}: has tensors this model does not: {few(unknown)}")
    for name, (dtype, shape) in layout.items():
        got_dtype, got_shape = entries[name][0], entries[name][1]
        if got_dtype != np.dtype(dtype).newbyteorder("<") or got_shape != tuple(shape):
            raise FormatError(f"{path}: entry {name!r} has dtype {NAMES[got_dtype.str]} and shape {list(got_shape)}; "
                              f"the model's has {NAMES[np.dtype(dtype).newbyteorder('<').str]} and {list(shape)}")


__all__ = ["FormatError", "read", "serialize", "write"]
