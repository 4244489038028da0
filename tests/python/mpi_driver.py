"""Started by test_distributed.py under mpirun: trains through nanowhale.trainer.train and saves this
rank's final parameters, balance biases, optimizer steps and per-step losses to OUT/rank<r>.npz, so the
test can compare ranks and runs bit for bit.

    mpi_driver.py OUT --config CFG.toml [--run-dir DIR] [--stop-after N] | --resume RUN
                  [--freeze-rank R --freeze-step S] [--perturb-rank R]

--freeze-rank R stops (SIGSTOP) rank R as it enters the gradient all-reduce of step S: a rank that hangs.
--perturb-rank R makes rank R's balance biases drift from the others'.
"""

import argparse
import os
import signal
import sys
from pathlib import Path

import numpy as np

import nanowhale._C as _C
from nanowhale import checkpoint, distributed, trainer

models = []


class RecordedModel(_C.Model):
    """The trainer's model, kept so its final state can be saved."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        models.append(self)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--config")
    p.add_argument("--resume")
    p.add_argument("--run-dir")
    p.add_argument("--stop-after", type=int)
    p.add_argument("--freeze-rank", type=int)
    p.add_argument("--freeze-step", type=int, default=1)
    p.add_argument("--perturb-rank", type=int, help="this rank nudges one balance bias after its first step")
    args = p.parse_args()
    _C.Model = RecordedModel
    if args.freeze_rank is not None:
        reduce = distributed.Group.all_reduce_gradients
        calls = []

        def freezing(self, model, *a):
            calls.append(1)
            if self.rank == args.freeze_rank and len(calls) == args.freeze_step:
                os.kill(os.getpid(), signal.SIGSTOP)
            return reduce(self, model, *a)

        distributed.Group.all_reduce_gradients = freezing
    overrides = [f"run.dir='{args.run_dir}'"] if args.run_dir else []
    if args.perturb_rank is not None:
        step = _C.Optimizer.step

        def nudged(self, *a, **k):
            norm = step(self, *a, **k)
            if distributed.launched_world_size() > 1 and int(os.environ["OMPI_COMM_WORLD_RANK"]) == args.perturb_rank:
                model = models[-1]
                name = next(n for n in model.buffer_names() if n.endswith("moe.bias"))
                model.set_buffer(name, model.get_buffer(name) + 1e-3)
            return norm

        _C.Optimizer.step = nudged
    result = trainer.train(args.config, resume=args.resume, overrides=overrides, progress=False,
                           _stop_after_steps=args.stop_after)
    rank = result["rank"]
    state = checkpoint.model_tensors(models[-1])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    np.savez(Path(args.out) / f"rank{rank}.npz", losses=np.array(result["losses"]), **state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
