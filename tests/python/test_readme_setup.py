"""The README's research setup lines, run as written in a fresh virtual environment on a copy of this
checkout: the build requirements first, then the editable install with its persistent build directory
(`--no-build-isolation` fails with "No module named 'scikit_build_core'" without them). One full C++ build,
CPU-only (SKBUILD_CMAKE_DEFINE turns CUDA off): a few minutes on 2 cores. Needs PyPI (or the pip
configuration's wheels): skipped when pypi.org is unreachable, a failure then under NANOWHALE_REQUIRE_NETWORK=1."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def setup_lines() -> list[str]:
    """The venv and pip lines of the research section's first bash block, as the README writes them."""
    text = README.read_text()
    section = text[text.index("## Research: let a coding agent"):]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start:section.index("```", start)]
    return [ln for ln in block.splitlines() if ln.startswith(("python3 -m venv", "pip install"))]


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def test_the_readme_names_the_build_requirements_before_the_editable_install():
    lines = setup_lines()
    assert len(lines) == 3 and lines[0].startswith("python3 -m venv")
    assert all(req in lines[1] for req in ("scikit-build-core", "pybind11", "scipy-openblas32", "ninja"))
    assert lines[2].startswith("pip install --no-build-isolation -Cbuild-dir=build/dev -e .")


def test_the_readme_research_setup_works_in_a_fresh_venv(tmp_path):
    if not pypi_reachable():
        if os.environ.get("NANOWHALE_REQUIRE_NETWORK") == "1":
            pytest.fail("NANOWHALE_REQUIRE_NETWORK=1 but pypi.org is unreachable")
        pytest.skip("pypi.org is unreachable: the setup lines install from it")
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout: the copy is made of its tracked files")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    copy = tmp_path / "nanowhale"
    for name in filter(None, files.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / name)
    check = ("python -c \"from pathlib import Path; import nanowhale._C; from nanowhale.research.build import detect; "
             "s = detect(Path('.')); print(s.kind, s.build_dir)\"\nnanowhale research init --help > /dev/null")
    script = "set -e\n" + "\n".join(setup_lines()) + "\n" + check + "\n"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(SKBUILD_CMAKE_DEFINE="NANOWHALE_CUDA=OFF", CMAKE_BUILD_PARALLEL_LEVEL="2",
               PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                    if not p.startswith(str(Path(sys.prefix)))))
    p = subprocess.run(["bash", "-c", script], cwd=copy, env=env, capture_output=True, text=True, timeout=2400)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    kind, build_dir = p.stdout.strip().splitlines()[-1].split()
    assert kind == "cmake" and Path(build_dir) == copy / "build" / "dev"
    assert (copy / "build" / "dev" / "CMakeCache.txt").exists()
