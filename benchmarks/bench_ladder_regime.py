"""The training regime of each rung of the research ladder: what its budget buys on this machine.

    python benchmarks/bench_ladder_regime.py [--ladder nanowhale/research/ladder.toml] [--steps 6] [--threads 0]

Per rung (the CPU budget, or --budget KIND:AMOUNT for all): active parameters, FLOPs per token, the
budget's training tokens and optimizer steps, tokens per active parameter, and the expected minutes of
training from the tokens/s of the median step of a short probe (nanowhale/research/speed.py: --steps
optimizer steps, the first 2 warm-up; seeded random tokens, no data, no evaluation). The regime a
research loop should resemble is the top rung's (tokens per parameter, steps); the CPU rungs' budgets in
ladder.toml are chosen from this table, which is written there.
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ladder", default=None, help="a ladder TOML (default: nanowhale/research/ladder.toml)")
    ap.add_argument("--budget", help="KIND:AMOUNT for every rung instead of its budget_cpu")
    ap.add_argument("--steps", type=int, default=6, help="probe steps per rung (2 of them warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="training threads (0: all cores)")
    ap.add_argument("--rungs", nargs="*", help="only these rungs (default: every rung; big ones take long)")
    a = ap.parse_args()

    from nanowhale.config import merge, parse_override, resolve
    from nanowhale.research.ladder import DEFAULT_LADDER, load_ladder, parse_budget
    from nanowhale.research.speed import probe
    from nanowhale.research.worker import budget_overrides

    print(f"{'rung':<16} {'active':>10} {'FLOP/tok':>10} {'tokens':>12} {'steps':>6} {'tok/param':>9} "
          f"{'tok/s':>8} {'minutes':>8}")
    for r in load_ladder(a.ladder or DEFAULT_LADDER):
        if a.rungs and r.name not in a.rungs:
            continue
        cfg = resolve(r.preset, [], r.overrides() + [f"train.threads={a.threads}"])
        kind, amount = parse_budget(a.budget or r.budget_cpu)
        for o in budget_overrides(cfg, kind, amount):
            merge(cfg, parse_override(o))
        m = cfg.model_config()
        tokens = cfg.train.steps * cfg.train.batch_tokens
        tps = probe(cfg, a.steps)["tokens_per_second"]
        print(f"{r.name:<16} {m.num_active_params():>10,} {m.flops_per_token():>10.3g} {tokens:>12,} "
              f"{cfg.train.steps:>6} {tokens / m.num_active_params():>9.2f} {tps:>8,.0f} {tokens / tps / 60:>8.1f}",
              flush=True)


if __name__ == "__main__":
    main()
