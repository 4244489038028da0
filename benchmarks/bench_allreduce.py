"""All-reduce overhead of data-parallel training: the time to sum a model's whole gradient arena and its
routing counts over the job's ranks (Communicator.all_reduce_gradients: one call per bucket, arena order),
against the time of a training step, for the tiny and nanowhale-100m gradient sizes.

Run it under the launcher with the process counts to compare; one process is the reference (a world of
one has no communication at all):

    python benchmarks/bench_allreduce.py                                    # 1 process
    mpirun --oversubscribe -np 2 python benchmarks/bench_allreduce.py       # 2 processes sharing the cores
    mpirun -np 8 python benchmarks/bench_allreduce.py --device cuda         # one rank per GPU (NCCL)

Each rank runs its share of every step (micro_batch x seq_len random tokens per rank: the global batch
grows with the world), and the threads of a machine's cores are split among its ranks. Per preset,
medians over --steps steps (after one warmup step) of: the whole step (forward_backward, all-reduce,
optimizer step), the all-reduce inside it, and --reps all-reduces timed alone; the all-reduce fraction of
the step, the job's tokens/s, and the algorithmic bandwidth (gradient bytes / all-reduce seconds).
"""

import argparse
import json
import os
import statistics
import time

import numpy as np

import nanowhale._C as C
from nanowhale import distributed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="tiny,nanowhale-100m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256, help="rows of this many tokens (the preset's when 0)")
    p.add_argument("--bucket-mb", type=float, default=32)
    p.add_argument("--json", help="append one JSON line per preset to this file (rank 0)")
    args = p.parse_args()

    group = distributed.init(args.device, 600.0)
    if args.device == "cpu" and group.local_world_size > 1:
        C.set_num_threads(max(1, C.get_num_threads() // group.local_world_size))
    bucket = int(args.bucket_mb * (1 << 20))
    rng = np.random.default_rng(group.rank)
    for preset in args.presets.split(","):
        cfg = C.ModelConfig.preset(preset)
        if args.seq_len:
            cfg.seq_len = args.seq_len
        model = C.Model(cfg, seed=0, device=args.device)
        opt = C.Optimizer(model)
        tokens = rng.integers(0, cfg.vocab_size, size=(args.micro_batch, cfg.seq_len + 1))
        steps, reduces = [], []
        for s in range(args.steps + 1):
            group.barrier("step start")
            t0 = time.perf_counter()
            model.forward_backward(tokens[:, :-1], tokens[:, 1:], grad_scale=1.0 / group.world_size)
            t1 = time.perf_counter()
            group.all_reduce_gradients(model, bucket)
            t2 = time.perf_counter()
            opt.step()  # returns the gradient norm to the host: the GPU has finished the step
            model.zero_grad()
            t3 = time.perf_counter()
            if s:  # the first step warms up
                steps.append(group.max([t3 - t0])[0])
                reduces.append(group.max([t2 - t1])[0])
        alone = []
        for _ in range(args.reps):
            group.barrier("all-reduce start")
            t0 = time.perf_counter()
            group.all_reduce_gradients(model, bucket)
            alone.append(group.max([time.perf_counter() - t0])[0])
        grad_bytes = 4 * sum(int(np.prod(model.get_grad(n).shape)) for n in model.parameter_names())
        step, reduce, reduce_alone = (statistics.median(x) for x in (steps, reduces, alone))
        row = {"preset": preset, "device": args.device, "world_size": group.world_size,
               "threads_per_rank": C.get_num_threads(), "grad_mb": grad_bytes / 2**20,
               "tokens_per_step": args.micro_batch * cfg.seq_len * group.world_size, "step_s": step,
               "allreduce_in_step_s": reduce, "allreduce_alone_s": reduce_alone,
               "allreduce_fraction": reduce / step, "tokens_per_s": args.micro_batch * cfg.seq_len * group.world_size / step,
               "algbw_gb_s": grad_bytes / reduce_alone / 1e9 if group.world_size > 1 else None}
        if group.is_main:
            print(f"{preset:>15} x{group.world_size} {args.device} ({row['threads_per_rank']} thr/rank): grads "
                  f"{row['grad_mb']:.1f} MB, step {step * 1e3:.1f} ms, all-reduce {reduce * 1e3:.2f} ms in step / "
                  f"{reduce_alone * 1e3:.2f} ms alone ({100 * row['allreduce_fraction']:.2f}% of the step), "
                  f"{row['tokens_per_s']:,.0f} tok/s" + (f", {row['algbw_gb_s']:.2f} GB/s" if row["algbw_gb_s"] else ""),
                  flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
        del opt, model


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
