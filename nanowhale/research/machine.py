"""Machine facts for the ledger, and the CPU's measured fp32 peak FLOP/s (cached per machine) for MFU.

The peak is measured, not assumed: a register-resident FMA loop in C++ (csrc/core/peak_flops.cpp) on one
thread, the best of a few short trials (a neighbour's load only lowers a trial), times the thread count.
Cached in ~/.cache/nanowhale/peak_flops.json keyed by CPU model, vector width and build, so it costs about
a second once per machine; `research init` measures again and the cache keeps the highest value seen.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

TRIALS = 3
TRIAL_SECONDS = 0.3


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file() -> Path:
    from nanowhale.trainer import cache_dir

    return cache_dir() / "peak_flops.json"


def cpu_peak_flops_per_core(refresh: bool = False) -> float:
    """Measured fp32 FLOP/s of one core (best of TRIALS), cached per CPU model and vector width."""
    import nanowhale._C as _C

    key = f"{cpu_model()}|lanes={_C.peak_flops_vector_width()}|{platform.machine()}"
    path = _cache_file()
    cache = {}
    if path.exists():
        try:
            cache = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}
    known = cache.get(key) if isinstance(cache.get(key), (int, float)) and cache[key] > 0 else 0.0
    if known and not refresh:
        return float(known)
    peak = max([known] + [_C.measure_peak_flops(1, TRIAL_SECONDS) for _ in range(TRIALS)])  # a peak only grows
    cache[key] = peak
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(cache, indent=1))
    tmp.replace(path)
    return peak


def facts(threads: int | None = None, refresh: bool = False) -> dict:
    """What the ledger records about the machine an experiment ran on."""
    import nanowhale._C as _C

    gpu = None
    if _C.cuda_available():
        gpu = "cuda"
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads or _C.get_num_threads(),
            "gpu": gpu, "cpu_peak_flops_per_core": cpu_peak_flops_per_core(refresh),
            "vector_lanes": _C.peak_flops_vector_width(), "python": platform.python_version(),
            "platform": platform.platform()}


__all__ = ["cpu_model", "cpu_peak_flops_per_core", "facts"]
