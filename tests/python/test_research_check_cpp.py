"""`nanowhale research check` on real C++: a copy of the engine built in a throwaway repo (about a minute of
compiling on 2 cores, the one slow research test) — a wrong backward in an op is caught by the whole-model
gradient check, and touching csrc/model/model.cpp rebuilds that file only, an untouched tree nothing."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from nanowhale.research import build, commands
from nanowhale.research.check import run_check
from research_repo_fixtures import git

ROOT = Path(__file__).resolve().parents[2]
WRONG = ("const T k = dot * r * r / T(C);", "const T k = dot * r / T(C);")  # a factor r forgotten in d(rmsnorm)


def test_check_catches_a_wrong_cpp_backward_and_rebuilds_one_file(tmp_path, micro_data):
    repo = tmp_path / "repo"
    for d in ("csrc", "kernels", "nanowhale"):
        shutil.copytree(ROOT / d, repo / d, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy2(ROOT / "CMakeLists.txt", repo / "CMakeLists.txt")
    (repo / ".gitignore").write_text("*.so\n__pycache__/\nbuild/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "engine copy")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(repo), "-B", str(repo / "build" / "research"), *gen, "-DCMAKE_BUILD_TYPE=Release",
                    "-DNANOWHALE_BUILD_TESTS=OFF", "-DNANOWHALE_CUDA=OFF", f"-DPython_EXECUTABLE={sys.executable}"],
                   check=True, capture_output=True)
    setup = build.BuildSetup("cmake", str(repo / "build" / "research"), str(repo))
    os.environ.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", "2")
    first = build.rebuild(setup)
    assert first.ok, first.log[-3000:]
    assert list((repo / "nanowhale").glob("_C*.so")), "the module was not installed in place"
    data_dir, _ = micro_data
    assert commands.init("cpp", data=str(data_dir), path=repo, log=lambda *a: None) == 0
    assert build.detect(repo).kind == "cmake"

    out = []
    assert run_check(path=repo, log=out.append) == 0, "\n".join(out)
    assert "gradient_check: ok" in "\n".join(out)

    rms = repo / "csrc" / "cpu" / "rmsnorm.cpp"
    text = rms.read_text()
    assert WRONG[0] in text
    rms.write_text(text.replace(*WRONG))
    out = []
    assert run_check(path=repo, log=out.append) == 1
    joined = "\n".join(out)
    assert "gradient_check: FAILED" in joined and "analytic" in joined, joined

    git(repo, "checkout", "--", "csrc/cpu/rmsnorm.cpp")
    assert build.rebuild(setup).rebuilt                          # the restored file is compiled again
    assert not build.rebuild(setup).rebuilt                      # untouched: nothing
    os.utime(repo / "csrc" / "model" / "model.cpp")
    res = build.rebuild(setup)
    assert res.ok and res.rebuilt and "model.cpp" in res.log
    compiled = [ln for ln in res.log.splitlines() if "Building" in ln]
    assert len(compiled) == 1, compiled                          # one file, then the links
