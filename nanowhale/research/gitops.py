"""The git operations the harness needs, on the research repository (subprocess `git`, nothing else)."""

from __future__ import annotations

import subprocess
from pathlib import Path


class Git:
    def __init__(self, repo: str | Path):
        self.repo = Path(repo)

    def __call__(self, *args: str, check: bool = True) -> str:
        p = subprocess.run(["git", *args], cwd=self.repo, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise ValueError(f"git {' '.join(args)} failed in {self.repo}: {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout

    def ok(self, *args: str) -> bool:
        """Whether the git command succeeds (a question: is-ancestor, does a patch apply)."""
        return subprocess.run(["git", *args], cwd=self.repo, capture_output=True).returncode == 0

    @staticmethod
    def toplevel(path: str | Path = ".") -> Path:
        p = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True)
        if p.returncode != 0:
            raise ValueError(f"{Path(path).resolve()} is not inside a git repository (research happens in a git "
                             "clone of nanowhale)")
        return Path(p.stdout.strip())

    def head(self) -> str:
        return self("rev-parse", "HEAD").strip()

    def branch(self) -> str:
        return self("rev-parse", "--abbrev-ref", "HEAD").strip()

    def branch_exists(self, name: str) -> bool:
        return self("rev-parse", "--verify", "--quiet", f"refs/heads/{name}", check=False).strip() != ""

    def dirty(self) -> list[str]:
        """Changed or untracked (not ignored) paths, as `git status --porcelain` lines."""
        return [ln for ln in self("status", "--porcelain", "--untracked-files=all").splitlines() if ln.strip()]

    def changed_paths(self) -> list[str]:
        """Paths that differ from HEAD, untracked ones included (stages everything: the index is the harness's)."""
        self("add", "-A")
        return [p for p in self("diff", "--cached", "--name-only", "HEAD").splitlines() if p]

    def staged_diff(self, paths: list[str] | None = None, exclude: list[str] | None = None) -> str:
        spec = list(paths or [])
        spec += [f":(exclude){p}" for p in exclude or []]
        return self("diff", "--cached", "--binary", "HEAD", "--", *spec)

    def commit(self, message: str) -> str:
        self("add", "-A")
        self("-c", "user.name=nanowhale research", "-c", "user.email=research@nanowhale.invalid",
             "commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def restore(self) -> None:
        """Back to HEAD: tracked files reset, untracked (not ignored) files removed."""
        self("reset", "-q", "--hard", "HEAD")
        self("clean", "-q", "-fd")
