"""The harness task definitions of the six built-in sets, pointed at this machine's data.

The YAMLs in nanowhale/lm_eval/tasks/ name their files relative to the shared data folder ("@DATA@/...");
the harness's `json` loader needs absolute paths, so `task_dir()` writes a copy with the folder filled in
(NANOWHALE_SHARED_DATA, as `nanowhale eval --task` finds it) and returns it for --include_path. Nothing is
downloaded: HF_DATASETS_OFFLINE=1 holds.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from nanowhale.tasks.base import shared_data_dir

TEMPLATES = Path(__file__).with_name("tasks")
# nanowhale's task names -> the harness's (lm-eval's own hellaswag, arc_easy, ... download their data)
HARNESS_NAMES = {"hellaswag": "nanowhale_hellaswag", "arc-easy": "nanowhale_arc_easy",
                 "arc-challenge": "nanowhale_arc_challenge", "mmlu": "nanowhale_mmlu", "piqa": "nanowhale_piqa",
                 "gsm8k": "nanowhale_gsm8k"}


def task_dir(data_dir: str | Path | None = None, root: str | Path | None = None) -> Path:
    """A folder of the built-in task YAMLs reading `data_dir` (default: the shared data folder), under `root`
    (default: the temp folder), named by a hash of its contents so concurrent runs share it safely."""
    data = Path(data_dir or shared_data_dir()).resolve()
    files = {p.name: p.read_text() for p in sorted(TEMPLATES.iterdir()) if p.suffix in (".yaml", ".py")}
    files = {name: text.replace("@DATA@", data.as_posix()) if name.endswith(".yaml") else text
             for name, text in files.items()}
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]
    out = Path(root or tempfile.gettempdir()) / f"nanowhale-harness-tasks-{digest}"
    if not out.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + "."))
        for name, text in files.items():
            (tmp / name).write_text(text)
        try:
            os.replace(tmp, out)
        except OSError:  # another process wrote the same folder first
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
    return out


def harness_task_names(names: str) -> list[str]:
    """Comma-separated names: nanowhale's built-in names map to their offline harness tasks, the rest pass
    through (tasks under --harness-include, or lm-eval's own)."""
    out = [HARNESS_NAMES.get(n.strip(), n.strip()) for n in names.split(",") if n.strip()]
    if not out:
        raise ValueError("no harness task given")
    return out


__all__ = ["HARNESS_NAMES", "harness_task_names", "task_dir"]
