"""The safetensors file format, written and read with NumPy (no dependency; the `safetensors` library reads it).

Layout: an 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
"__metadata__": {str: str}} padded with spaces to a multiple of 8, then the tensors' bytes back to back
(little-endian, C order), offsets relative to the end of the header.
"""

from __future__ import annotations

import json
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


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata); FormatError with the reason if the file is truncated or malformed."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise FormatError(f"{path}: truncated ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise FormatError(f"{path}: truncated (header of {n} bytes, file of {len(data)})")
    try:
        header = json.loads(data[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: corrupt header ({e})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: corrupt header")
    meta = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + n:]
    out = {}
    end_max = 0
    for name, info in header.items():
        try:
            dtype = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
            shape = tuple(int(s) for s in info["shape"])
            a, b = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: corrupt entry for {name!r}") from None
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= a <= b <= len(body)) or b - a != count * dtype.itemsize:
            raise FormatError(f"{path}: {name!r} lies outside the file or has the wrong size (truncated?)")
        out[name] = np.frombuffer(body[a:b], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
        end_max = max(end_max, b)
    if end_max != len(body):
        raise FormatError(f"{path}: {len(body) - end_max} unexpected bytes after the tensors")
    return out, meta


__all__ = ["FormatError", "read", "serialize", "write"]
