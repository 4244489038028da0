"""Checkpoints: atomic directories of safetensors weights, optimizer state and JSON metadata.

    RUN/checkpoints/step_000120/
        model.safetensors       parameters and MoE balance biases (buffers), float32, by name
        optimizer.safetensors   "exp_avg.<name>", "exp_avg_sq.<name>" (Adam m and v / Muon momentum)
        tokenizer.nwtok         a copy of the tokenizer, so a checkpoint stands alone
        meta.json               config, step, tokens seen, loader position, seeds, optimizer steps,
                                tokenizer fingerprint, and each file's size and SHA-256 (written last)
    RUN/checkpoints/latest      the name of the newest complete checkpoint

Atomicity: a checkpoint is written into a hidden temp directory, every file fsynced, then renamed to its
final name, then `latest` is replaced (temp file + os.replace). A kill at any moment therefore leaves
either the previous state or the new one; a half-written temp directory is ignored and removed by the
next save. Only the newest `keep` checkpoints are kept. Loading checks sizes and hashes, so a damaged
file gives a clear error instead of garbage weights.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import nanowhale.safetensors_io as st  # not "from nanowhale import": the package loads lazily
from nanowhale.config import RunConfig
from nanowhale.data.sources import sha256_of

FORMAT = "nanowhale-checkpoint"
VERSION = 1
MODEL_FILE, OPTIM_FILE, META_FILE, TOKENIZER_FILE, LATEST = (
    "model.safetensors", "optimizer.safetensors", "meta.json", "tokenizer.nwtok", "latest")
OPT_STATES = ("exp_avg", "exp_avg_sq")

# Tests set this to a callable(stage) to interrupt a save at a chosen point (stages: see save()).
_test_hook = None


def _hook(stage: str) -> None:
    if _test_hook is not None:
        _test_hook(stage)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover (platforms without directory fds)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_safetensors(path: Path, tensors: dict, metadata: dict) -> None:
    with open(path, "wb") as f:
        st.write(f, tensors, metadata, on_half=lambda: _hook(f"half:{path.name}"))
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def model_tensors(model) -> dict[str, np.ndarray]:
    tensors = {n: model.get_param(n) for n in model.parameter_names()}
    for n in model.buffer_names():
        if n in tensors:  # pragma: no cover (the engine's names are distinct)
            raise ValueError(f"buffer name {n} collides with a parameter name")
        tensors[n] = model.get_buffer(n)
    return tensors


def optimizer_tensors(model, optimizer) -> dict[str, np.ndarray]:
    return {f"{w}.{n}": optimizer.get_state(w, n) for w in OPT_STATES for n in model.parameter_names()}


def save(root: str | Path, step: int, model, optimizer, meta: dict, tokenizer_path: str | Path | None,
         keep: int = 2) -> Path:
    """Writes checkpoint `step_{step:06d}` under root atomically, points `latest` at it, prunes to `keep`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _hook("start")
    _write_safetensors(tmp / MODEL_FILE, model_tensors(model), {"format": FORMAT, "step": str(step)})
    _hook("model")
    if optimizer is not None:
        _write_safetensors(tmp / OPTIM_FILE, optimizer_tensors(model, optimizer),
                           {"format": FORMAT, "steps": str(optimizer.steps)})
    _hook("optimizer")
    if tokenizer_path is not None:
        shutil.copyfile(tokenizer_path, tmp / TOKENIZER_FILE)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in sorted(tmp.iterdir())}
    meta = {"format": FORMAT, "version": VERSION, "step": step, **meta, "files": files}
    if optimizer is not None:
        meta["optimizer_steps"] = int(optimizer.steps)
    write_text_atomic(tmp / META_FILE, json.dumps(meta, indent=1))
    _fsync_dir(tmp)
    _hook("meta")
    if final.exists():  # a checkpoint of the same step (e.g. a re-run): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    _hook("renamed")
    write_text_atomic(root / LATEST, name + "\n")
    _hook("latest")
    prune(root, keep)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories with a meta.json, oldest first."""
    return sorted(p for p in root.glob("step_*") if p.is_dir() and (p / META_FILE).exists())


def prune(root: Path, keep: int) -> None:
    """Keeps the newest `keep` checkpoints (and whatever `latest` names); removes stale temp directories."""
    latest = (root / LATEST).read_text().strip() if (root / LATEST).exists() else None
    ckpts = complete_checkpoints(root)
    for p in ckpts[:-keep] if keep > 0 else []:
        if p.name != latest:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-step_*"):
        shutil.rmtree(p, ignore_errors=True)


def find(path: str | Path) -> Path:
    """The checkpoint directory that `path` names: a checkpoint, a checkpoints/ directory or a run directory
    (the one `latest` points to)."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"checkpoint {p} does not exist")
    if (p / META_FILE).exists() or (p / MODEL_FILE).exists():
        return p
    for root in (p / "checkpoints", p):
        if (root / LATEST).exists():
            target = root / (root / LATEST).read_text().strip()
            if (target / META_FILE).exists():
                return target
        done = complete_checkpoints(root) if root.is_dir() else []
        if done:  # no (valid) pointer: the newest complete checkpoint
            return done[-1]
    raise ValueError(f"no checkpoint in {p} (expected meta.json, checkpoints/latest or step_* directories)")


def _layout(tensors: dict[str, np.ndarray]) -> dict[str, tuple[np.dtype, tuple]]:
    return {n: (a.dtype, a.shape) for n, a in tensors.items()}


@dataclass
class Checkpoint:
    dir: Path
    meta: dict

    @property
    def config(self) -> dict:
        return self.meta["config"]

    @property
    def tokenizer_path(self) -> Path:
        return self.dir / TOKENIZER_FILE

    def verify(self, fname: str) -> Path:
        """The path of `fname` after checking its size and SHA-256 against meta.json."""
        path = self.dir / fname
        info = self.meta["files"].get(fname)
        if info is None:
            raise ValueError(f"checkpoint {self.dir} is corrupt: {META_FILE} 'files' does not list {fname}")
        if not path.exists():
            raise ValueError(f"checkpoint {self.dir} is incomplete: {fname} is missing")
        size = path.stat().st_size
        if size != info["bytes"]:
            raise ValueError(f"checkpoint {self.dir} is corrupt: {fname} has {size} bytes, expected {info['bytes']}")
        if sha256_of(path) != info["sha256"]:
            raise ValueError(f"checkpoint {self.dir} is corrupt: {fname} does not match its SHA-256 in meta.json")
        return path

    def _read(self, fname: str, layout: dict) -> dict[str, np.ndarray]:
        try:
            return st.read(self.verify(fname), layout)[0]
        except st.FormatError as e:
            raise ValueError(f"checkpoint {self.dir} is corrupt: {e}") from None

    def load_model(self, model) -> None:
        """Copies parameters and buffers into `model`; the file must hold exactly the model's tensors, each
        with the model's dtype and shape (checked whether or not the hashes match)."""
        tensors = self._read(MODEL_FILE, _layout(model_tensors(model)))
        params = set(model.parameter_names())
        for n, a in tensors.items():
            (model.set_param if n in params else model.set_buffer)(n, a)

    def load_optimizer(self, model, optimizer) -> None:
        if "optimizer_steps" not in self.meta:
            raise ValueError(f"checkpoint {self.dir} is corrupt: {META_FILE} lacks 'optimizer_steps'")
        tensors = self._read(OPTIM_FILE, _layout(optimizer_tensors(model, optimizer)))
        for key, a in tensors.items():
            which, name = key.split(".", 1)
            optimizer.set_state(which, name, a)
        optimizer.steps = self.meta["optimizer_steps"]

    def resume_state(self) -> tuple[int, int, list[list[int]], float]:
        """(step, tokens seen, the loader state of each rank, training seconds) of a training checkpoint."""
        m = self.meta
        if "tokens" not in m or not (m.get("loader_states") or "loader_state" in m):
            raise ValueError(f"checkpoint {self.dir} is corrupt: {META_FILE} lacks 'tokens' or 'loader_state(s)'")
        return m["step"], m["tokens"], m.get("loader_states") or [m["loader_state"]], m.get("train_seconds", 0.0)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _nonneg_int(v) -> bool:
    return _is_int(v) and v >= 0


def _int64_list(v) -> bool:
    return isinstance(v, list) and all(_is_int(x) and -2**63 <= x < 2**63 for x in v)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _file_entry(v) -> bool:
    return (isinstance(v, dict) and set(v) == {"bytes", "sha256"} and _nonneg_int(v["bytes"])
            and isinstance(v["sha256"], str) and len(v["sha256"]) == 64
            and all(c in "0123456789abcdef" for c in v["sha256"]))


# meta.json: key -> (required, check, what it must be). One pass checks them all.
META_SCHEMA = {
    "format": (True, lambda v: v == FORMAT, f"'{FORMAT}'"),
    "version": (True, lambda v: _is_int(v) and v == VERSION, f"{VERSION}, the format version this nanowhale reads"),
    "step": (True, _nonneg_int, "an integer >= 0"),
    "config": (True, lambda v: isinstance(v, dict), "a table"),
    "files": (True, lambda v: isinstance(v, dict) and MODEL_FILE in v and set(v) <= {MODEL_FILE, OPTIM_FILE, TOKENIZER_FILE}
              and all(_file_entry(e) for e in v.values()),
              f"{{file name: {{bytes, sha256}}}} for {MODEL_FILE} and optionally {OPTIM_FILE}, {TOKENIZER_FILE}"),
    "optimizer_steps": (False, _nonneg_int, "an integer >= 0"),
    "tokens": (False, _nonneg_int, "an integer >= 0"),
    "loader_state": (False, lambda v: _int64_list(v), "a list of int64"),
    "loader_states": (False, lambda v: isinstance(v, list) and all(_int64_list(s) for s in v),
                      "a list (one per rank) of lists of int64"),
    "train_seconds": (False, lambda v: _finite(v) and v >= 0, "a number >= 0"),
    "seed": (False, _is_int, "an integer"),
    "rng": (False, lambda v: isinstance(v, dict), "a table"),
    "tokenizer": (False, lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                  "a table of strings"),
    "data_dir": (False, lambda v: isinstance(v, str), "a string"),
    "val_bpb": (False, lambda v: v is None or _finite(v), "a number or null"),
}


def check_meta(d: Path, meta) -> None:
    """ValueError naming the key if a key of meta.json that nanowhale reads is missing or has a bad type or value."""
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint {d}: {META_FILE} is not a nanowhale checkpoint (not a JSON object)")
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {d}: {META_FILE} is not a nanowhale checkpoint (format {meta.get('format')!r})")
    for key, (required, ok, what) in META_SCHEMA.items():
        if key not in meta:
            if required:
                raise ValueError(f"checkpoint {d} is corrupt: {META_FILE} lacks '{key}'")
        elif not ok(meta[key]):
            raise ValueError(f"checkpoint {d} is corrupt: {META_FILE} '{key}' must be {what}, got {meta[key]!r:.200}")
    if OPTIM_FILE in meta["files"] and "optimizer_steps" not in meta:
        raise ValueError(f"checkpoint {d} is corrupt: {META_FILE} lists {OPTIM_FILE} but lacks 'optimizer_steps'")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Finds (see find()) and opens a checkpoint, checking its metadata."""
    d = find(path)
    meta_path = d / META_FILE
    if not meta_path.exists():
        raise ValueError(f"checkpoint {d} is incomplete: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text(), parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"checkpoint {d} is corrupt: {META_FILE}: {e}") from None
    check_meta(d, meta)
    try:  # a config that does not validate is a damaged checkpoint too
        RunConfig.from_dict(meta["config"])
    except ValueError as e:
        raise ValueError(f"checkpoint {d} is corrupt: {META_FILE} 'config': {e}") from None
    return Checkpoint(d, meta)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


__all__ = ["Checkpoint", "find", "open_checkpoint", "save", "write_text_atomic"]
