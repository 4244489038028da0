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
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanowhale import safetensors_io as st
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

    def _read(self, fname: str) -> tuple[dict, dict]:
        path = self.dir / fname
        if not path.exists():
            raise ValueError(f"checkpoint {self.dir} is incomplete: {fname} is missing")
        info = self.meta.get("files", {}).get(fname)
        if info is not None:
            size = path.stat().st_size
            if size != info["bytes"]:
                raise ValueError(f"checkpoint {self.dir} is corrupt: {fname} has {size} bytes, expected {info['bytes']}")
            if sha256_of(path) != info["sha256"]:
                raise ValueError(f"checkpoint {self.dir} is corrupt: {fname} does not match its SHA-256 in meta.json")
        try:
            return st.read(path)
        except st.FormatError as e:
            raise ValueError(f"checkpoint {self.dir} is corrupt: {e}") from None

    def load_model(self, model) -> None:
        """Copies parameters and buffers into `model`; every name must be present with the right shape."""
        tensors, _ = self._read(MODEL_FILE)
        names = list(model.parameter_names()) + list(model.buffer_names())
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ValueError(f"checkpoint {self.dir}: {MODEL_FILE} lacks {missing[:3]}{'...' if len(missing) > 3 else ''}"
                             " (a different model configuration?)")
        params = set(model.parameter_names())
        for n in names:
            try:
                (model.set_param if n in params else model.set_buffer)(n, tensors[n])
            except ValueError as e:
                raise ValueError(f"checkpoint {self.dir}: {e}") from None

    def load_optimizer(self, model, optimizer) -> None:
        tensors, _ = self._read(OPTIM_FILE)
        for w in OPT_STATES:
            for n in model.parameter_names():
                key = f"{w}.{n}"
                if key not in tensors:
                    raise ValueError(f"checkpoint {self.dir}: {OPTIM_FILE} lacks {key}")
                optimizer.set_state(w, n, tensors[key])
        optimizer.steps = int(self.meta["optimizer_steps"])


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Finds (see find()) and opens a checkpoint, checking its metadata."""
    d = find(path)
    meta_path = d / META_FILE
    if not meta_path.exists():
        raise ValueError(f"checkpoint {d} is incomplete: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"checkpoint {d} is corrupt: {META_FILE}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {d}: {META_FILE} is not a nanowhale checkpoint")
    if meta.get("version") != VERSION:
        raise ValueError(f"checkpoint {d}: format version {meta.get('version')}, this nanowhale reads {VERSION}")
    for k in ("config", "step"):
        if k not in meta:
            raise ValueError(f"checkpoint {d} is corrupt: {META_FILE} lacks '{k}'")
    return Checkpoint(d, meta)


__all__ = ["Checkpoint", "find", "open_checkpoint", "save", "write_text_atomic"]
