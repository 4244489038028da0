"""Data parallelism over the processes of one job: `mpirun -np N nanowhale train ...` (or `srun`).

Every rank holds the whole model and trains on its share of each global batch (the loader gives rank r
every N-th document); after its micro-batches the ranks sum gradients and MoE routing counts
(`Group.all_reduce_gradients`, C++: csrc/dist/), so all take the same optimizer step and the same
balance-bias update. A process started without a launcher is a world of one: no communicator, no MPI.

The launcher is recognised by its environment (Open MPI, MPICH/PMI, MVAPICH, Slurm steps); the
communicator is MPI for CPU training and NCCL (bootstrapped over MPI) for GPU training.
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback

import numpy as np

import nanowhale._C as _C

# World-size variables set by launchers, checked in this order.
WORLD_SIZE_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
# Waits that cover another rank's slow work rather than a collective (rank 0 preparing the corpus).
LONG_WAIT_S = 24 * 3600.0

_comm = None  # this process's communicator: MPI_Init happens once per process


def launched_world_size() -> int:
    """The number of processes the launcher started (1 without one)."""
    for key in WORLD_SIZE_ENV:
        value = os.environ.get(key)
        if value:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} in the environment is not a process count") from None
    return 1


def local_accumulation(micro_batches: int, world_size: int, what: str) -> int:
    """Micro-batches per rank for a global step of `micro_batches`; ValueError when they do not divide."""
    if micro_batches % world_size:
        raise ValueError(f"{what}, which does not divide over {world_size} processes; make it a multiple of "
                         f"{world_size} micro-batches (or run a number of processes that divides {micro_batches})")
    return micro_batches // world_size


class Group:
    """This job's ranks. Without a communicator, a world of one where every reduction is the identity."""

    def __init__(self, comm=None):
        self.comm = comm

    @property
    def rank(self) -> int:
        return self.comm.rank if self.comm else 0

    @property
    def world_size(self) -> int:
        return self.comm.world_size if self.comm else 1

    @property
    def local_world_size(self) -> int:
        return self.comm.local_world_size if self.comm else 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, metrics and checkpoints."""
        return self.rank == 0

    def all_reduce_gradients(self, model, bucket_bytes: int = 32 << 20) -> None:
        if self.comm:
            self.comm.all_reduce_gradients(model, bucket_bytes)

    def sum(self, values: list[float], what: str = "metric all-reduce") -> list[float]:
        a = np.array(values, dtype=np.float64)
        if self.comm:
            self.comm.all_reduce(a, "sum", what)
        return a.tolist()

    def max(self, values: list[float], what: str = "metric all-reduce") -> list[float]:
        a = np.array(values, dtype=np.float64)
        if self.comm:
            self.comm.all_reduce(a, "max", what)
        return a.tolist()

    def gather(self, row: list[int], what: str) -> list[list[int]]:
        """Every rank's int64 row (lengths may differ), on every rank."""
        if not self.comm:
            return [list(row)]
        lengths = np.zeros(self.world_size, dtype=np.int64)
        lengths[self.rank] = len(row)
        self.comm.all_reduce(lengths, "sum", what)
        table = np.zeros((self.world_size, int(lengths.max())), dtype=np.int64)
        table[self.rank, :len(row)] = row
        self.comm.all_reduce(table, "sum", what)
        return [table[r, :lengths[r]].tolist() for r in range(self.world_size)]

    def check_same(self, name: str, text: str,
                   hint: str = "every rank must get the same arguments, config files and environment") -> None:
        """ValueError on every rank unless all ranks pass the same text (compared by hash)."""
        if not self.comm:
            return
        digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")  # fits int64
        hashes = np.array(self.gather([digest], f"{name} check"))[:, 0]
        differ = [r for r in range(self.world_size) if hashes[r] != hashes[0]]
        if differ:
            ranks = ", ".join(str(r) for r in differ)
            raise ValueError(f"the processes of this job disagree on the {name}: rank{'s' if len(differ) > 1 else ''} "
                             f"{ranks} differ{'' if len(differ) > 1 else 's'} from rank 0 ({hint})")

    def check_replicas(self, model, step: int) -> None:
        """ValueError on every rank unless all hold the same parameters and balance biases, bit for bit (run
        at each checkpoint: a reduction that differed between ranks would otherwise go unnoticed)."""
        if not self.comm:
            return
        h = hashlib.sha256()
        for name in model.parameter_names():
            h.update(model.get_param(name).tobytes())
        for name in model.buffer_names():
            h.update(model.get_buffer(name).tobytes())
        self.check_same(f"model after step {step}", h.hexdigest(),
                        "the ranks' parameters or balance biases drifted apart; the all-reduce was not identical "
                        "on every rank")

    def barrier(self, what: str, timeout: float | None = None) -> None:
        if not self.comm:
            return
        saved = self.comm.timeout
        self.comm.timeout = timeout or saved
        try:
            self.comm.barrier(what)
        finally:
            self.comm.timeout = saved


def init(device: str, timeout: float) -> Group:
    """The job's group: a world of one without a launcher, else this process's communicator."""
    global _comm
    world = launched_world_size()
    if world == 1:
        return Group()
    if _comm is None:
        ok, why = _C.mpi_available()
        if not ok:
            raise RuntimeError(f"started as one of {world} processes, but {why}")
        _comm = _C.Communicator(device, timeout)  # finalizes MPI at exit
        _abort_on_uncaught_exceptions()
    elif _comm.backend != ("nccl" if device == "cuda" else "mpi"):
        raise ValueError(f"this process already trained on another device ({_comm.backend}); one device per process")
    _comm.timeout = timeout
    return Group(_comm)


def abort_job(message: str, code: int = 1) -> None:
    """In a multi-process job: prints `message` with this rank and ends every process (the others would
    otherwise wait for this one until their timeout). Returns in a single process."""
    if _comm is None:
        return
    print(f"nanowhale: rank {_comm.rank} of {_comm.world_size}: {message}", file=sys.stderr, flush=True)
    _comm.abort(code)


def _abort_on_uncaught_exceptions() -> None:
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        abort_job("".join(traceback.format_exception_only(kind, value)).strip())

    sys.excepthook = hook


__all__ = ["Group", "abort_job", "init", "launched_world_size", "local_accumulation"]
