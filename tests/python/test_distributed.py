"""Data-parallel training over MPI (CPU): `mpirun -np 2` runs of the tiny preset (on the micro corpus, so
its vocabulary, with 64-token rows) against a one-process run of the same global batches, against each
other, across a resume, and the job's errors. Needs mpirun and nanowhale's MPI plugin; without them the
MPI tests skip, and fail when NANOWHALE_REQUIRE_MPI=1 (CI installs Debian's Open MPI)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nanowhale
import nanowhale._C as _C
from nanowhale import distributed, trainer
from nanowhale.config import resolve, to_toml
from nanowhale.data.shards import make_loader

DRIVER = Path(__file__).with_name("mpi_driver.py")
STEPS = 10


def _mpi_missing() -> str | None:
    if not shutil.which("mpirun"):
        return "mpirun is not on PATH (install Open MPI: apt-get install openmpi-bin libopenmpi-dev)"
    ok, why = _C.mpi_available()
    return None if ok else why


@pytest.fixture(scope="module")
def mpirun():
    """The mpirun command prefix; skips (or fails under NANOWHALE_REQUIRE_MPI=1) without MPI."""
    missing = _mpi_missing()
    if missing:
        if os.environ.get("NANOWHALE_REQUIRE_MPI") == "1":
            pytest.fail(f"NANOWHALE_REQUIRE_MPI=1 but {missing}")
        pytest.skip(missing)
    # Root in containers; two ranks on machines with fewer cores.
    return ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"]


def _config(data_dir: Path, vocab: int, run_dir: Path, **train) -> Path:
    """The tiny preset on the micro corpus: 10 steps of 4 micro-batches of 2 x 64 tokens."""
    sets = [f"model.vocab_size={vocab}", "model.seq_len=64", f"data.dir='{data_dir}'", f"run.dir='{run_dir}'",
            f"train.steps={STEPS}", "train.batch_tokens=512", "train.micro_batch=2", "train.threads=1",
            "eval.tokens=256", "eval.batch_size=4", "sample.n=0", "run.checkpoint_every=0"]
    sets += [f"train.{k}={v}" for k, v in train.items()]
    cfg = resolve("tiny", None, sets)
    path = run_dir.with_suffix(".toml")
    path.write_text(to_toml(cfg.to_dict()))
    return path


# Subprocesses start where the nanowhale this test imported lives, so `-m nanowhale.cli` and `-c` scripts
# import the same package (an installed one, not the source tree's, in CI).
PACKAGE_PARENT = str(Path(nanowhale.__file__).resolve().parent.parent)


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=PACKAGE_PARENT)


def _train(mpirun, out: Path, *args: str) -> dict:
    r = _run(mpirun + [sys.executable, str(DRIVER), str(out), *args])
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = [dict(np.load(out / f"rank{i}.npz")) for i in range(2)]
    return ranks


@pytest.fixture(scope="module")
def two_rank_run(mpirun, micro_data, tmp_path_factory):
    """(config path, [rank 0 state, rank 1 state]) of an uninterrupted 2-rank run."""
    data_dir, vocab = micro_data
    root = tmp_path_factory.mktemp("dp")
    cfg = _config(data_dir, vocab, root / "run")
    return cfg, _train(mpirun, root / "out", "--config", str(cfg))


class _InterleavedLoader:
    """In one process, the rows a 2-rank step consumes: rank 0's micro-batches, then rank 1's."""

    def __init__(self, loaders, per_rank):
        self.loaders, self.per_rank, self.calls = loaders, per_rank, 0

    def next(self):
        loader = self.loaders[(self.calls // self.per_rank) % len(self.loaders)]
        self.calls += 1
        return loader.next()

    def state(self):
        return self.loaders[0].state()

    @property
    def total_tokens(self):
        return self.loaders[0].total_tokens

    @property
    def epoch(self):  # each loader counts the rows of all ranks
        return self.loaders[0].epoch


def test_two_ranks_equal_one_rank_with_the_same_global_batch(two_rank_run, micro_data, tmp_path, monkeypatch):
    cfg_path, ranks = two_rank_run
    cfg = resolve(None, [cfg_path], [f"run.dir='{tmp_path / 'one'}'"])
    per_rank = cfg.accumulation() // 2

    def interleaved(directory, split, B, T, tok, packed=True, seed=0, rank=0, world_size=1):
        assert world_size == 1
        return _InterleavedLoader([make_loader(directory, split, B, T, tok, packed=packed, seed=seed, rank=r,
                                               world_size=2) for r in range(2)], per_rank)

    monkeypatch.setattr(trainer, "make_loader", interleaved)
    ref_model = []

    class Kept(_C.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            ref_model.append(self)

    monkeypatch.setattr(trainer._C, "Model", Kept)
    one = trainer.train(cfg, progress=False)
    # Summation order differs (one process: 4 micro-batches in a row; two: 2 + 2, then the all-reduce).
    np.testing.assert_allclose(ranks[0]["losses"], one["losses"], rtol=2e-5)
    final = {n: ref_model[0].get_param(n) for n in ref_model[0].parameter_names()}
    for name, value in final.items():
        np.testing.assert_allclose(ranks[0][name], value, rtol=1e-3, atol=2e-5, err_msg=name)
    biases = [n for n in ranks[0] if n.endswith("moe.bias")]
    assert biases
    for name in ranks[0]:  # every rank holds the same model: parameters and balance biases, bit for bit
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)


def test_two_rank_runs_are_bit_identical(mpirun, two_rank_run, tmp_path):
    cfg_path, ranks = two_rank_run
    again = _train(mpirun, tmp_path / "out", "--config", str(cfg_path), "--run-dir", str(tmp_path / "run"))
    for name in ranks[0]:
        np.testing.assert_array_equal(again[0][name], ranks[0][name], err_msg=name)


def test_resumed_two_rank_run_reproduces_the_uninterrupted_one(mpirun, two_rank_run, micro_data, tmp_path):
    _, ranks = two_rank_run
    data_dir, vocab = micro_data
    cfg = _config(data_dir, vocab, tmp_path / "run")
    first = _train(mpirun, tmp_path / "a", "--config", str(cfg), "--stop-after", "4")
    np.testing.assert_array_equal(first[0]["losses"], ranks[0]["losses"][:4])
    rest = _train(mpirun, tmp_path / "b", "--resume", str(tmp_path / "run"))
    np.testing.assert_array_equal(rest[0]["losses"], ranks[0]["losses"][4:])
    for name in ranks[0]:
        if name != "losses":
            np.testing.assert_array_equal(rest[1][name], ranks[0][name], err_msg=name)
    with pytest.raises(ValueError, match="written by a run of 2 process"):  # one process cannot continue it
        trainer.train(resume=tmp_path / "run", progress=False)


def test_ranks_with_different_configs_stop_with_a_message(mpirun, micro_data, tmp_path):
    data_dir, vocab = micro_data
    cfg = _config(data_dir, vocab, tmp_path / "run")
    one = ["-np", "1", sys.executable, "-m", "nanowhale.cli", "train", "--config", str(cfg), "--no-progress"]
    r = _run(mpirun[:-2] + one + ["--seed", "1", ":"] + one + ["--seed", "2"])
    assert r.returncode != 0
    assert "disagree on the configuration: rank 1 differs from rank 0" in r.stderr, r.stderr


def test_a_stuck_rank_is_named_after_the_timeout(mpirun, micro_data, tmp_path):
    data_dir, vocab = micro_data
    cfg = _config(data_dir, vocab, tmp_path / "run", comm_timeout=3)
    r = _run(mpirun + [sys.executable, str(DRIVER), str(tmp_path / "out"), "--config", str(cfg),
                       "--freeze-rank", "1", "--freeze-step", "3"], timeout=90)
    assert r.returncode != 0
    assert "gradient all-reduce" in r.stderr and "did not complete within 3 s on rank 0 of 2" in r.stderr, r.stderr
    assert "rank 1 did not answer a liveness check" in r.stderr, r.stderr


def test_ranks_whose_models_drift_apart_stop_at_the_checkpoint(mpirun, micro_data, tmp_path):
    data_dir, vocab = micro_data
    cfg = _config(data_dir, vocab, tmp_path / "run", steps=2)
    r = _run(mpirun + [sys.executable, str(DRIVER), str(tmp_path / "out"), "--config", str(cfg), "--perturb-rank", "1"])
    assert r.returncode != 0
    assert "disagree on the model after step 2: rank 1 differs from rank 0" in r.stderr, r.stderr
    assert not (tmp_path / "run" / "checkpoints" / "step_000002").exists()


def test_a_batch_that_does_not_divide_over_the_ranks_is_an_error(mpirun, micro_data, tmp_path):
    data_dir, vocab = micro_data
    cfg = _config(data_dir, vocab, tmp_path / "run", batch_tokens=3 * 128)
    r = _run(mpirun + [sys.executable, "-m", "nanowhale.cli", "train", "--config", str(cfg), "--no-progress"])
    assert r.returncode == 2, r.stdout + r.stderr
    assert "3 micro-batches" in r.stderr and "does not divide over 2 processes" in r.stderr, r.stderr


def test_collectives(mpirun, tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(
        "import numpy as np, nanowhale._C as C\n"
        "c = C.Communicator('cpu', 120.0)\n"
        "r = c.rank\n"
        "f = np.array([r + 0.5, -r], dtype=np.float32); c.all_reduce(f)\n"
        "d = np.array([r * 2.0], dtype=np.float64); c.all_reduce(d, 'max')\n"
        "i = np.array([r + 1, 1 << 40], dtype=np.int64); c.all_reduce(i)\n"
        "b = np.full(3, r, dtype=np.int64); c.broadcast(b, root=1)\n"
        "c.barrier()\n"
        "try:\n"
        "    c.all_reduce(np.zeros(2, dtype=np.int32))\n"
        "except ValueError as e:\n"
        "    err = 'int32' in str(e)\n"
        "line = ' '.join(map(str, (r, c.world_size, c.backend, f.tolist(), d.tolist(), i.tolist(), b.tolist(), err)))\n"
        f"open(f'{tmp_path}/rank{{r}}.txt', 'w').write(line)\n")
    r = _run(mpirun + [sys.executable, str(script)])
    assert r.returncode == 0, r.stdout + r.stderr
    # One file per rank: mpirun forwards the ranks' stdout in pieces, so two printed lines can run together.
    lines = sorted((tmp_path / f"rank{k}.txt").read_text() for k in range(2))
    assert lines == [f"{k} 2 mpi [2.0, -1.0] [2.0] [3, 2199023255552] [1, 1, 1] True" for k in range(2)]


# ---- without MPI: the parts that run in one process ----

def test_world_size_comes_from_the_launcher(monkeypatch):
    for key in distributed.WORLD_SIZE_ENV:
        monkeypatch.delenv(key, raising=False)
    assert distributed.launched_world_size() == 1
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    assert distributed.launched_world_size() == 4
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="OMPI_COMM_WORLD_SIZE='two'"):
        distributed.launched_world_size()


def test_accumulation_adapts_to_the_world_size():
    assert distributed.local_accumulation(8, 1, "b") == 8
    assert distributed.local_accumulation(8, 4, "b") == 2
    with pytest.raises(ValueError, match="does not divide over 3 processes"):
        distributed.local_accumulation(8, 3, "b")


def test_a_single_process_is_a_world_of_one():
    g = distributed.init("cpu", 10.0)
    assert (g.rank, g.world_size, g.is_main) == (0, 1, True)
    assert g.sum([1.5, 2.0]) == [1.5, 2.0] and g.gather([3, 4], "x") == [[3, 4]]
    g.check_same("configuration", "anything")


def test_a_single_process_never_loads_mpi(micro_data, tmp_path):
    """Importing and training in one process leave libmpi unloaded; without the plugin a launched job
    says why instead of training alone."""
    data_dir, vocab = micro_data
    cfg = _config(data_dir, vocab, tmp_path / "run", steps=2)
    script = (
        "import sys\n"
        "from nanowhale import distributed, trainer\n"
        f"r = trainer.train({str(cfg)!r}, progress=False)\n"
        "maps = open('/proc/self/maps').read()\n"
        "print(r['status'], r['world_size'], 'libmpi' in maps, 'nanowhale_mpi' in maps)\n"
        "import os; os.environ['OMPI_COMM_WORLD_SIZE'] = '2'\n"
        "try:\n"
        "    distributed.init('cpu', 5.0)\n"
        "except RuntimeError as e:\n"
        "    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k not in distributed.WORLD_SIZE_ENV}
    env["NANOWHALE_MPI_PLUGIN"] = str(tmp_path / "missing" / "libnanowhale_mpi.so")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                       cwd=PACKAGE_PARENT)
    assert r.returncode == 0, r.stdout + r.stderr
    first, second = r.stdout.strip().splitlines()[-2:]
    assert first == "done 1 False False"
    assert second.startswith("started as one of 2 processes, but cannot load the MPI plugin ")
    assert "missing/libnanowhale_mpi.so" in second
