"""Incremental rebuilds of the extension between experiments.

Research needs an editable install whose CMake build directory persists, so that changing one C++ file
recompiles that file and relinks (seconds), instead of a full `pip install .` (minutes):

    pip install --no-build-isolation -Cbuild-dir=build/dev -e .

`detect()` finds how nanowhale is installed; `rebuild()` runs `cmake --build` in the persistent build
directory and, when anything was rebuilt, `cmake --install` into the place the module is imported from
(exactly what scikit-build-core's editable rebuild does).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SWITCH_COMMAND = "pip install --no-build-isolation -Cbuild-dir=build/dev -e ."
EDITABLE_HOOK = "_editable_skbc_nanowhale.py"
COMPILED = ("Building ", "Linking ")  # what Ninja and Make print for each compile and link step


@dataclass
class BuildSetup:
    kind: str               # "cmake": a persistent build dir to rebuild; "none": nothing to build
    build_dir: str = ""
    install_dir: str = ""   # cmake --install --prefix (the editable's site-packages, or the repo for in-place)
    note: str = ""

    def to_dict(self) -> dict:
        return dict(kind=self.kind, build_dir=self.build_dir, install_dir=self.install_dir, note=self.note)

    @staticmethod
    def from_dict(d: dict) -> "BuildSetup":
        return BuildSetup(**d)

    @staticmethod
    def detect_or_none(repo: Path) -> "BuildSetup":
        """detect(), or a setup that rebuilds nothing, saying why (a swarm worktree without its own build)."""
        try:
            return detect(repo)
        except ValueError as e:
            return BuildSetup("none", note=f"C++ changes are not rebuilt here: {e}")


def _editable_hook() -> Path | None:
    for entry in sys.path:
        p = Path(entry or ".") / EDITABLE_HOOK
        if p.is_file():
            return p
    return None


def _hook_arguments(hook: Path) -> list:
    """The literal arguments of the `install(...)` call at the end of scikit-build-core's editable hook."""
    tree = ast.parse(hook.read_text())
    for node in reversed(tree.body):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "install":
            return [ast.literal_eval(a) for a in node.value.args]
    raise ValueError(f"{hook}: no install(...) call found (an unknown scikit-build-core version?)")


def detect(repo: Path) -> BuildSetup:
    """How nanowhale is installed for this repo; ValueError with the one command to fix a setup that cannot
    rebuild incrementally."""
    repo = repo.resolve()
    inplace = sorted((repo / "nanowhale").glob("_C*.so"))
    cmake_cache = repo / "build" / "research" / "CMakeCache.txt"
    if inplace:  # a module built into the source tree (tests; or a hand-made CMake build)
        if cmake_cache.exists():
            return BuildSetup("cmake", str(cmake_cache.parent), str(repo), "in-place module, build/research")
        return BuildSetup("none", note=f"in-place module {inplace[0].name} without a build directory: C++ "
                          "changes are not rebuilt")
    hook = _editable_hook()
    if hook is None:
        raise ValueError("nanowhale is not an editable install, so each C++ change would need a full "
                         f"`pip install .` (minutes). Switch once, in {repo}: {SWITCH_COMMAND}")
    args = _hook_arguments(hook)
    known_source_files, build_dir, install_dir = args[0], args[4], args[9]
    src = known_source_files.get("nanowhale", "")
    if src and not Path(src).resolve().is_relative_to(repo):
        raise ValueError(f"the editable nanowhale install points at {Path(src).parent}, not at this repository "
                         f"({repo}); in {repo} run: {SWITCH_COMMAND}")
    if not build_dir:
        raise ValueError("nanowhale is an editable install without a persistent build directory, so every "
                         f"rebuild would start from scratch; in {repo} run: {SWITCH_COMMAND}")
    return BuildSetup("cmake", str(Path(build_dir)), str((hook.parent / (install_dir or "")).resolve()),
                      "editable install, persistent build dir")


@dataclass
class BuildResult:
    ok: bool
    rebuilt: bool
    seconds: float
    log: str


def rebuild(setup: BuildSetup, timeout: float = 1800) -> BuildResult:
    """cmake --build (only what changed) and, when something was rebuilt, cmake --install."""
    t0 = time.perf_counter()
    if setup.kind == "none":
        return BuildResult(True, False, 0.0, setup.note)
    try:
        p = subprocess.run(["cmake", "--build", setup.build_dir], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return BuildResult(False, True, time.perf_counter() - t0, f"build timed out after {timeout:.0f} s\n{e.stdout or ''}")
    log = p.stdout + p.stderr
    if p.returncode != 0:
        return BuildResult(False, True, time.perf_counter() - t0, log)
    rebuilt = any(word in log for word in COMPILED)
    if rebuilt:
        q = subprocess.run(["cmake", "--install", setup.build_dir, "--prefix", setup.install_dir],
                           capture_output=True, text=True)
        log += q.stdout + q.stderr
        if q.returncode != 0:
            return BuildResult(False, True, time.perf_counter() - t0, log)
    return BuildResult(True, rebuilt, time.perf_counter() - t0, log)


__all__ = ["BuildResult", "BuildSetup", "SWITCH_COMMAND", "detect", "rebuild"]
