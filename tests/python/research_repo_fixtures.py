"""A throwaway research repository for the harness's end-to-end tests: a git repo holding a copy of the
nanowhale Python package with the built extension placed in it (so the worker runs the repo's own code),
a micro data directory, a three-rung micro ladder, and a stand-in C++ project (one file) that the harness
rebuilds incrementally with CMake, so rebuild and compile-error paths run in seconds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nanowhale
import nanowhale._C

MICRO_MODEL = ("vocab_size={v}, seq_len=32, d_model=32, n_layer=2, n_head=2, n_kv_head=1, head_dim=16, "
               "n_dense_layers=1, dense_hidden=64, n_experts=4, top_k=2, expert_hidden=32, n_shared=1, "
               "shared_hidden=32")

MICRO_SHAPE = dict(seq_len=32, d_model=32, n_layer=2, n_head=2, n_kv_head=1, head_dim=16, dense_hidden=64,
                   n_experts=4, expert_hidden=32, shared_hidden=32)
# (name, tokens of the budget, shape changes, batch tokens)
RUNGS = (
    ("micro", 24576, {}, 2048),
    ("micro2", 32768, dict(d_model=48, n_layer=3, n_head=3, dense_hidden=96, expert_hidden=48, shared_hidden=48), 2048),
    # a longer context whose batch holds 3 rows of 8: a micro_batch of 16 does not fit
    ("micro-long", 32768, dict(seq_len=96), 2304),
)


def ladder_toml(vocab_size: int) -> str:
    """The micro ladder: tiny's preset with micro shapes set per rung."""
    out = []
    for name, tokens, shape, batch in RUNGS:
        keys = {**MICRO_SHAPE, **shape}
        out += ["[[rung]]", f'name = "{name}"', 'preset = "tiny"', f'budget_cpu = "tokens:{tokens}"',
                f'budget_gpu = "tokens:{tokens}"', "eval_tokens = 512", "[rung.set]",
                f'"model.vocab_size" = {vocab_size}', *(f'"model.{k}" = {v}' for k, v in keys.items()),
                f'"train.batch_tokens" = {batch}', '"train.micro_batch" = 8', ""]
    return "\n".join(out)


CMAKE = """cmake_minimum_required(VERSION 3.24)
project(probe LANGUAGES CXX)
add_library(probe SHARED csrc/model/model.cpp)
install(TARGETS probe DESTINATION probe_lib)
"""

MODEL_CPP = "int probe_forward(int x) { return 2 * x; }\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def make_research_repo(root: Path, vocab_size: int) -> Path:
    repo = root / "repo"
    src = Path(nanowhale.__file__).parent
    shutil.copytree(src, repo / "nanowhale", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    so = Path(nanowhale._C.__file__)
    shutil.copy2(so, repo / "nanowhale" / so.name)
    (repo / "csrc" / "model").mkdir(parents=True)
    (repo / "csrc" / "model" / "model.cpp").write_text(MODEL_CPP)
    (repo / "CMakeLists.txt").write_text(CMAKE)
    (repo / "ladder.toml").write_text(ladder_toml(vocab_size))
    (repo / ".gitignore").write_text("*.so\n__pycache__/\nbuild/\nprobe_lib/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "nanowhale copy")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(repo), "-B", str(repo / "build" / "research"), *gen, "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True)
    return repo


def make_micro_research_repo(root: Path) -> tuple[Path, Path]:
    """make_research_repo over micro data prepared in root/data: (repo, data dir)."""
    from train_fixtures import prepare_micro_data
    from nanowhale.data.tokenizer import Tokenizer

    data = prepare_micro_data(root / "data")
    return make_research_repo(root, Tokenizer.load(str(data / "tokenizer.nwtok")).vocab_size), data
