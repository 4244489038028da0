"""Protected files: what the agent may not change (evaluation, data, tokenizer, the harness, the tests).

A fingerprint (sha256 per file) is recorded at `research init`; `run` refuses when any protected file was
changed, added or removed, naming it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import subprocess
from pathlib import Path

DEFAULT_PROTECTED = [
    "nanowhale/evaluate.py",         # the metric
    "nanowhale/posttrain/tasks.py",  # post-training's metric: the tasks' verifiers and splits
    "nanowhale/data/*",              # data preparation and the tokenizer
    "csrc/data/*",
    "nanowhale/research/*",          # the harness, the ladder
    "tests/*",                       # the suites `check --full` runs
    "research/.gitignore",
]


def _files(repo: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, text=True, check=True).stdout
    return sorted(set(p for p in out.splitlines() if p))


def fingerprint(repo: str | Path, patterns: list[str]) -> dict[str, str]:
    """{path: sha256} of every tracked or untracked (not ignored) file matching a pattern."""
    repo = Path(repo)
    out = {}
    for p in _files(repo):
        if any(fnmatch.fnmatch(p, pat) for pat in patterns) and (repo / p).is_file():
            out[p] = hashlib.sha256((repo / p).read_bytes()).hexdigest()
    return out


def changed(repo: str | Path, patterns: list[str], recorded: dict[str, str]) -> list[str]:
    """Protected paths that differ from the recorded fingerprint ('path (modified|added|removed)')."""
    now = fingerprint(repo, patterns)
    out = [f"{p} (modified)" for p in sorted(now.keys() & recorded.keys()) if now[p] != recorded[p]]
    out += [f"{p} (added)" for p in sorted(now.keys() - recorded.keys())]
    out += [f"{p} (removed)" for p in sorted(recorded.keys() - now.keys())]
    return out


__all__ = ["DEFAULT_PROTECTED", "changed", "fingerprint"]
