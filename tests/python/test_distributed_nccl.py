"""The NCCL backend (GPU buffers; bootstrapped over MPI): an all-reduce of real gradients against the CPU
oracle, and a short data-parallel training run on the GPU. One rank per GPU, at most two: on a machine
with one GPU the world size is 1 (NCCL then only copies, but its setup, the unique id broadcast and the
stream-ordered waits still run). Skips without a GPU or without mpirun; NANOWHALE_REQUIRE_CUDA=1 and
NANOWHALE_REQUIRE_MPI=1 turn those skips into failures."""

import os
import shutil
import subprocess
import sys

import pytest

import nanowhale._C as _C
from test_distributed import PACKAGE_PARENT


def _gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


@pytest.fixture(scope="module")
def mpirun_gpus():
    if not _C.cuda_available():
        if os.environ.get("NANOWHALE_REQUIRE_CUDA") == "1":
            pytest.fail("NANOWHALE_REQUIRE_CUDA=1 but no usable CUDA device (or a CPU-only build)")
        pytest.skip("no CUDA device")
    ok, why = _C.mpi_available()
    if not (shutil.which("mpirun") and ok):
        if os.environ.get("NANOWHALE_REQUIRE_MPI") == "1":
            pytest.fail(f"NANOWHALE_REQUIRE_MPI=1 but mpirun or the MPI plugin is missing: {why}")
        pytest.skip(f"mpirun or the MPI plugin is missing: {why or 'mpirun is not on PATH'}")
    world = max(1, min(2, _gpus()))
    return ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(world)], world


SCRIPT = """
import numpy as np, nanowhale._C as C, sys
sys.path.insert(0, {tests!r})
from conftest import micro_config, random_batch
comm = C.Communicator("cuda", 60.0)
assert comm.backend == "nccl", comm.backend
W, r = comm.world_size, comm.rank
cfg = micro_config()
gpu = C.Model(cfg, seed=0, device="cuda")
tokens, targets = random_batch(cfg, 2, 12, seed=r)
gpu.forward_backward(tokens, targets, grad_scale=1.0 / W)
comm.all_reduce_gradients(gpu, 4096)  # small buckets: several NCCL calls
cpu = C.Model(cfg, seed=0, device="cpu")
for k in range(W):
    t, y = random_batch(cfg, 2, 12, seed=k)
    cpu.forward_backward(t, y, grad_scale=1.0 / W)
for name in cpu.parameter_names():
    np.testing.assert_allclose(gpu.get_grad(name), cpu.get_grad(name), rtol=1e-4, atol=1e-6, err_msg=name)
host = np.array([r + 1.0]); comm.all_reduce(host)  # host buffers go over MPI
assert host[0] == W * (W + 1) / 2
print("rank", r, "ok", flush=True)
"""


def test_nccl_all_reduce_of_gradients_matches_the_cpu(mpirun_gpus, tmp_path):
    cmd, world = mpirun_gpus
    script = tmp_path / "nccl.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    r = subprocess.run(cmd + [sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                       cwd=PACKAGE_PARENT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(r.stdout.split("\n"))[-world:] == [f"rank {k} ok" for k in range(world)]


def test_data_parallel_training_on_gpus(mpirun_gpus, micro_data, tmp_path):
    cmd, world = mpirun_gpus
    data_dir, vocab = micro_data
    r = subprocess.run(cmd + [sys.executable, "-m", "nanowhale.cli", "train", "--preset", "tiny", "--device", "cuda",
                              "--data", str(data_dir), "--run-dir", str(tmp_path / "run"), "--steps", "5",
                              "--set", f"model.vocab_size={vocab}", "--set", "train.batch_tokens=4096",
                              "--set", "train.micro_batch=8", "--set", "sample.n=0", "--set", "eval.tokens=1024",
                              "--no-progress"], capture_output=True, text=True, timeout=300, cwd=PACKAGE_PARENT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "status: done" in r.stdout and f"world_size: {world}" in r.stdout, r.stdout
