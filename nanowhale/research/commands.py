"""`nanowhale research init | baseline | run | promote`: the steps of the loop that train and decide.

Every command prints a block of `key: value` lines after a `---` line (an agent greps it). The harness,
not the agent, keeps or discards: see stats.py for the rule and ledger.py for what is recorded.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from nanowhale.research import build as build_mod
from nanowhale.research import machine, paired, protect, stats
from nanowhale.research import size as size_mod
from nanowhale.research.context import (BRANCH_PREFIX, EXPERIMENT_CONFIG, LEDGER_FILE, LEDGER_POINTER,
                                        RESEARCH_DIR, Context, agent_id, ledger_location)
from nanowhale.research.ledger_db import is_postgres
from nanowhale.research.gitops import Git
from nanowhale.research.ladder import DEFAULT_LADDER, load_ladder, parse_budget, rung
from nanowhale.research.ledger import Ledger, now
from nanowhale.research.onboard import MAP_FILE

PRETRAIN_ENTRY = "nanowhale.research.worker:pretrain"
EXPERIMENT_TEMPLATE = """\
# The experiment config: yours to edit (with the code in scope, see agent_recipes/pretrain.md).
# Same sections and keys as `nanowhale train --config` (model, optim, train; nanowhale/config.py lists
# every key). Not here: `preset` (the scale) and the data, eval, run and sample sections, which the
# harness sets so every experiment is scored the same way.

[optim]

[train]
"""

GITIGNORE = """\
# Written by `nanowhale research`; never committed (the ledger is shared by every research branch).
ledger.sqlite*
ledger.url
swarm/
runs/
progress.png
plots/
insights.md
best/
map.md
"""


def heldout_key(result: dict) -> str:
    """The held-out score a promotion run reports: `heldout_metric` (an entry's own, in the metric's
    direction, e.g. post-training's test-split reward), else pretraining's `heldout_val_bpb` (lower is better)."""
    return "heldout_metric" if "heldout_metric" in result else "heldout_val_bpb"


def block(**kv) -> str:
    lines = ["---"]
    for k, v in kv.items():
        if isinstance(v, float):
            v = f"{v:.6g}"
        lines.append(f"{k}: {v}")
    return "\n".join(lines)


def _round(x):
    return "n/a" if x is None else round(x)


def _fmt(x, digits=6):
    return "n/a" if x is None else f"{x:.{digits}f}"


def init(tag: str, scale: str = "tiny", budget: str | None = None, data: str = "", ladder: str | None = None,
         metric: str = "val_bpb", direction: str = "lower", k: float = 2.0, throughput_floor: float = 0.005,
         threads: int = 0, pairs: int = 5, probe_steps: int = 8, free_size: bool = False,
         time_margin: float = paired.TIME_MARGIN, timeout_s: float = 0.0, memory_mb: int = 16000,
         entry: str = "nanowhale.research.worker:pretrain", ledger_url: str | None = None,
         path: str | Path = ".", log=print) -> int:
    repo = Git.toplevel(path)
    git = Git(repo)
    if not tag or any(c in tag for c in " ~^:?*[\\") or tag.startswith("-"):
        raise ValueError(f"tag {tag!r}: use letters, digits, '-', '_' or '.' (it becomes branch {BRANCH_PREFIX}TAG)")
    if direction not in ("lower", "higher"):
        raise ValueError(f"--direction must be lower or higher, got {direction!r}")
    if not k > 0:
        raise ValueError(f"-k must be > 0, got {k}")
    if not 0 <= time_margin < 1:
        raise ValueError(f"--time-margin must be in [0, 1), got {time_margin}")
    if not 0 <= throughput_floor < 1:
        raise ValueError(f"--throughput-floor must be in [0, 1), got {throughput_floor}")
    if metric == paired.METRIC:
        if direction != "higher":
            raise ValueError(f"--metric {paired.METRIC} is tokens/s: use --direction higher")
        if pairs < 2 or probe_steps < 3:
            raise ValueError(f"--pairs must be >= 2 and --probe-steps >= 3, got {pairs} and {probe_steps}")
    dirty = [x for x in git.dirty() if not x[3:].startswith((LEDGER_FILE, LEDGER_POINTER))]
    if dirty:
        raise ValueError(f"the working tree has changes: {describe_dirty(dirty)}; commit or stash them first "
                         "(init starts from a clean commit)")
    branch = BRANCH_PREFIX + tag
    if git.branch_exists(branch):
        raise ValueError(f"branch {branch} already exists: choose another tag (or `git checkout {branch}` to continue)")
    if ledger_url and not is_postgres(ledger_url):
        ledger_url = str(Path(ledger_url).resolve())
    where = ledger_url or ledger_location(repo)
    if (is_postgres(where) or Path(where).exists()) and Ledger.open(where).get(f"tag/{tag}") is not None:
        raise ValueError(f"tag {tag!r} is already in the ledger {where}: choose another tag")
    setup = build_mod.detect(repo)
    ladder_path = str(Path(ladder).resolve()) if ladder else str(DEFAULT_LADDER)
    r = rung(load_ladder(ladder_path), scale)
    import nanowhale._C as _C

    gpu = _C.cuda_available()
    budget = budget or (r.budget_gpu if gpu else r.budget_cpu)
    parse_budget(budget)
    if data and not (Path(data) / "tokenizer.nwtok").exists():
        raise ValueError(f"--data {data}: no tokenizer.nwtok there (prepare it with `nanowhale data prepare --out {data}`)")
    vocab_size = 0
    if data:
        from nanowhale.data.tokenizer import Tokenizer

        vocab_size = Tokenizer.load(str(Path(data) / "tokenizer.nwtok")).vocab_size
    threads = threads or _C.get_num_threads()
    facts = machine.facts(threads, refresh=True)

    git("checkout", "-q", "-b", branch)
    (repo / RESEARCH_DIR).mkdir(exist_ok=True)
    if not (repo / EXPERIMENT_CONFIG).exists():
        (repo / EXPERIMENT_CONFIG).write_text(EXPERIMENT_TEMPLATE)
    (repo / RESEARCH_DIR / ".gitignore").write_text(GITIGNORE)
    if ledger_url:
        (repo / LEDGER_POINTER).write_text(ledger_url + "\n")
    led = Ledger.open(where)
    start = git.commit(f"research {tag}: start (scale {scale}, budget {budget}, metric {metric} {direction})")
    patterns = list(protect.DEFAULT_PROTECTED)
    settings = {
        "tag": tag, "branch": branch, "start_commit": start, "scale": scale, "ladder": ladder_path,
        "budget": budget, "metric": metric, "direction": direction, "k": k, "throughput_floor": throughput_floor,
        "data_dir": str(Path(data).resolve()) if data else "", "threads": threads, "timeout_s": timeout_s,
        "memory_mb": memory_mb, "entry": entry, "pairs": pairs, "probe_steps": probe_steps, "protected": patterns,
        "free_size": bool(free_size), "time_margin": time_margin, "vocab_size": vocab_size,
        "fingerprint": protect.fingerprint(repo, patterns), "build": setup.to_dict(), "machine": facts,
        "created_at": now(), "agent": agent_id(),
    }
    led.set(**{f"tag/{tag}": settings, "current": tag})
    log(f"created branch {branch} at {start[:10]}; {EXPERIMENT_CONFIG} is the config you edit")
    if free_size:
        log("free size: the rung's size class is not locked, so keeps find the best size for this budget; "
            "they do not promote (a size found at one budget is not a finding at the next)")
    log(f"build: {setup.note} ({setup.build_dir or 'no build dir'}): C++ changes rebuild incrementally")
    if entry == PRETRAIN_ENTRY:
        from nanowhale.research.onboard import write_map

        write_map(Context.open(repo), log)
    log(block(tag=tag, branch=branch, start_commit=start, scale=scale, budget=budget,
              metric=f"{metric} ({direction} is better)", k=k, ledger=led.where,
              experiment_config=repo / EXPERIMENT_CONFIG, protected=", ".join(patterns),
              protected_files=len(settings["fingerprint"]), free_size=bool(free_size),
              map=repo / MAP_FILE if entry == PRETRAIN_ENTRY else "n/a", threads=threads, cpu=facts["cpu"],
              cpu_peak_gflops_per_core=round(facts["cpu_peak_flops_per_core"] / 1e9, 1), gpu=facts["gpu"],
              next="nanowhale research baseline"))
    return 0


def describe_dirty(lines: list[str], most: int = 8) -> str:
    """`git status --porcelain` lines as "research.log (untracked), nanowhale/trainer.py (modified)"."""
    kinds = {"??": "untracked", "A": "added", "M": "modified", "D": "deleted", "R": "renamed"}

    def kind(code: str) -> str:
        return kinds.get(code, kinds.get(code.strip()[:1], "changed"))

    out = [f"{x[3:]} ({kind(x[:2])})" for x in lines[:most]]
    return ", ".join(out) + (f" and {len(lines) - most} more" if len(lines) > most else "")


def _ensure_built(ctx: Context, log) -> build_mod.BuildResult:
    res = build_mod.rebuild(ctx.build)
    if res.rebuilt:
        log(f"rebuilt the extension in {res.seconds:.1f} s" if res.ok else "the build FAILED")
    return res


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


def baseline(repeats: int = 3, path=".", log=print) -> int:
    ctx = Context.open(path)
    if ctx.s["metric"] == paired.METRIC:
        raise ValueError(f"{paired.METRIC} needs no baseline: each run times the best commit beside the candidate")
    if ctx.git.dirty():
        raise ValueError(f"baseline runs the unchanged best commit: the working tree has changes: "
                         f"{describe_dirty(ctx.git.dirty())} (commit, `git stash -u` or delete them)")
    if ctx.git.head() != ctx.best_commit():
        raise ValueError(f"HEAD is not the best commit {ctx.best_commit()[:10]}")
    b = _ensure_built(ctx, log)
    if not b.ok:
        log(_tail(b.log))
        raise ValueError("the extension does not build at the best commit")
    start = len(ctx.baseline_rows())
    for i in range(repeats):
        seed = start + i
        log(f"baseline {i + 1}/{repeats} (seed {seed}) ...")
        res = ctx.train_one(f"baseline-{seed}", seed)
        _record_run(ctx, "baseline", seed, res)
        if res["status"] != "done":
            log(res.get("log_tail", ""))
            raise ValueError(f"the baseline run with seed {seed} ended with status {res['status']} (log above)")
        log(f"  {ctx.s['metric']} {res[ctx.s['metric']]:.6f}, {res['throughput']:,.0f} tok/s, "
            f"{res['training_seconds']:.1f} s training")
    noise = ctx.noise()
    log(block(baseline_runs=noise["r"], metric=ctx.s["metric"], mean=noise["mean"], sigma=noise["sigma"],
              sigma_measured=noise["sigma_raw"], relative_sigma=noise["sigma"] / abs(noise["mean"]),
              throughput=round(noise["throughput"]), throughput_sigma=round(noise["throughput_sigma"]),
              single_seed_margin=stats.margin(ctx.s["k"], noise["sigma"], noise["r"], 1),
              next='edit, then: nanowhale research run -m "what and why"'))
    return 0


def _record_run(ctx: Context, role: str, seed: int, res: dict, commit: str | None = None,
                rung_name: str | None = None, budget: str | None = None, promotion_id: int | None = None) -> int:
    return ctx.ledger.insert("baselines", {
        "agent": agent_id(), "tag": ctx.tag, "created_at": now(), "role": role, "promotion_id": promotion_id,
        "commit_sha": commit or ctx.git.head(), "scale": rung_name or ctx.s["scale"],
        "budget": budget or ctx.s["budget"], "seed": seed, "metric_name": ctx.s["metric"],
        "metric": res.get(ctx.s["metric"]) if res["status"] == "done" else None,
        "heldout_metric": res.get(heldout_key(res)), "throughput": res.get("throughput"),
        "train_seconds": res.get("training_seconds"), "eval_seconds": res.get("eval_seconds"),
        "peak_memory_mb": res.get("peak_memory_mb"), "status": res["status"], "log_tail": res.get("log_tail")})


def size_check(ctx: Context) -> tuple[str | None, size_mod.Size | None]:
    """(why the working tree's experiment is refused, its size): its config must resolve and, unless the tag
    is free-size, stay in the rung's size class. Only the pretraining entry's configs have a size."""
    if ctx.s["entry"] != PRETRAIN_ENTRY:
        return None, None
    try:
        cfg = ctx.resolve()
    except ValueError as e:
        return f"{EXPERIMENT_CONFIG} does not resolve: {e}", None
    size = size_mod.Size.of(cfg)
    if ctx.s.get("free_size"):
        return None, size
    return size_mod.refusal(ctx.resolve({}), cfg, ctx.rung().size_tolerance), size


def change_description(ctx: Context, row: dict) -> str:
    """The description of the change itself: a rerun of an earlier experiment's exact diff on the same
    commit (`show ID --diff | git apply`) is described by that experiment's -m, not by the rerun's."""
    same = ctx.ledger.rows("experiments", "tag = ? AND base_commit = ? AND COALESCE(code_diff, '') = ? AND "
                           "COALESCE(config_diff, '') = ?", (ctx.tag, row["base_commit"], row["code_diff"] or "",
                                                             row["config_diff"] or ""), order="id LIMIT 1")
    return same[0]["description"] if same else row["description"]


def _train_seeds(ctx: Context, eid: int, seeds: range, values: list, tps: list, acc: dict, log) -> dict:
    """Trains the working tree for each seed, appending to values/tps and summing seconds into acc; the
    result of the last run (its status is not 'done' on a failure, which ends the loop)."""
    res: dict = {"status": "done"}
    for seed in seeds:
        log(f"  training seed {seed} ...")
        res = ctx.train_one(f"exp-{eid:04d}-seed{seed}", seed)
        acc["train"] += res.get("training_seconds") or 0.0
        acc["eval"] += res.get("eval_seconds") or 0.0
        acc["mem"] = max(acc["mem"], res.get("peak_memory_mb") or 0.0)
        if res["status"] != "done":
            return res
        values.append(float(res[ctx.s["metric"]]))
        tps.append(float(res["throughput"]))
        log(f"  {ctx.s['metric']} {values[-1]:.6f} ({tps[-1]:,.0f} tok/s)")
    return res


def _crash(res: dict) -> dict:
    return dict(status=res["status"], verdict="crash", log_tail=res.get("log_tail"),
                reason=res.get("reason") or f"training ended with status {res['status']}")


def _judge(ctx: Context, eid: int, ref: stats.Reference, seeds: int, code_changed: bool,
           log) -> tuple[dict, list, list, dict, dict]:
    """Seeds while inconclusive (up to `seeds`); a would-be keep is then timed beside the best (paired time
    control) and confirmed over as many seeds as the baseline, so the new best is a mean like the baseline."""
    values, tps, acc = [], [], {"train": 0.0, "eval": 0.0, "mem": 0.0}
    pretrain = ctx.s["entry"] == PRETRAIN_ENTRY
    upd: dict = {}
    res: dict = {}
    d = None
    for seed in range(seeds):
        res = _train_seeds(ctx, eid, range(seed, seed + 1), values, tps, acc, log)
        if res["status"] != "done":
            return _crash(res), values, tps, acc, res
        d = stats.decide(ref, values, tps, ctx.s["k"], ctx.s["direction"], time_control=not pretrain)
        log(f"  {d.verdict} so far")
        if d.verdict != "inconclusive":
            break
    upd.update(status="done", verdict=d.verdict, reason=d.reason, margin=d.margin, throughput_margin=d.throughput_margin)
    if d.verdict != "keep" or not pretrain:
        return upd, values, tps, acc, res
    log(f"  better beyond noise: timing its step beside the best's ({int(ctx.s['pairs'])} pairs) ...")
    try:
        timing = paired.time_control(ctx, f"exp-{eid:04d}-time", code_changed, log)
    except ValueError as e:
        upd.update(status="crash", verdict="crash", reason="time control could not run: " + str(e).splitlines()[0],
                   log_tail=str(e))
        return upd, values, tps, acc, res
    upd.update(timing)
    if timing["time_verdict"] == "slower":
        upd.update(verdict="discard", reason=f"slower than the best beyond noise (time control, paired): "
                   f"{timing['time_reason']}; {d.reason}")
        return upd, values, tps, acc, res
    want = ctx.noise()["r"]
    if len(values) < want:
        log(f"  confirming over {want} seeds, as many as the baseline ...")
        res = _train_seeds(ctx, eid, range(len(values), want), values, tps, acc, log)
        if res["status"] != "done":
            upd.update(_crash(res))
            return upd, values, tps, acc, res
        d = stats.decide(ref, values, tps, ctx.s["k"], ctx.s["direction"], time_control=False)
    why = d.reason if d.verdict == "keep" else f"not confirmed over {len(values)} seeds: {d.reason}"
    upd.update(verdict=d.verdict, reason=f"{why}; time {timing['time_verdict']}: {timing['time_reason']}",
               margin=d.margin)
    return upd, values, tps, acc, res


def run(description: str, seeds: int = 1, path=".", log=print) -> int:
    """One experiment: refuse protected edits and size changes, rebuild, train (more seeds while
    inconclusive, up to `seeds`), time a would-be keep beside the best and confirm it over the baseline's
    number of seeds, record, then commit (keep) or restore the best commit (anything else)."""
    from nanowhale.research import swarm  # the swarm's part of a run (it uses this module's block())

    t_start = time.perf_counter()
    ctx = Context.open(path)
    if not description.strip():
        raise ValueError("-m: describe what you changed and why")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    touched = protect.changed(ctx.repo, ctx.s["protected"], ctx.s["fingerprint"])
    if touched:
        log(block(verdict="refused", reason="protected files changed: " + ", ".join(touched),
                  fix="revert them (git checkout -- PATH, or delete added files), then run again"))
        return 3
    if ctx.swarm is not None:
        swarm.before_run(ctx)
    is_paired = ctx.s["metric"] == paired.METRIC
    refused, size = (None, None) if is_paired else size_check(ctx)
    if refused:
        log(block(verdict="refused", reason=refused,
                  fix="reallocate instead (depth for width, experts for expert width, ...) so active parameters "
                      "and FLOPs/token stay in the class; or start a tag with `init --free-size`"))
        return 3
    ref, best = (None, ctx.best()) if is_paired else ctx.reference()
    base = ctx.git.head()
    if base != ctx.best_commit():
        raise ValueError(f"HEAD {base[:10]} is not the best commit {ctx.best_commit()[:10]} (git checkout {ctx.s['branch']})")
    paths = ctx.git.changed_paths()
    row = {"agent": agent_id(), "tag": ctx.tag, "started_at": now(), "parent_id": best["id"] if best else None,
           "base_commit": base, "description": description, "code_diff": ctx.git.staged_diff(exclude=[EXPERIMENT_CONFIG]),
           "config_diff": ctx.git.staged_diff([EXPERIMENT_CONFIG]), "scale": ctx.s["scale"], "budget": ctx.s["budget"],
           "seeds": [], "metric_name": ctx.s["metric"], "direction": ctx.s["direction"],
           "best_metric": ref and ref.metric, "best_throughput": ref and ref.throughput,
           "machine": ctx.s["machine"], "status": "running", "verdict": "pending",
           "active_params": size and size.active_params, "flops_per_token": size and size.flops_per_token,
           "free_size": int(bool(ctx.s.get("free_size")))}
    what = change_description(ctx, row)
    eid = ctx.ledger.insert("experiments", row)
    log(f"experiment {eid}: {len(paths)} changed file(s){': ' + ', '.join(paths[:6]) if paths else ' (a rerun of the best)'}")
    slot = swarm.take_slot(ctx, eid, best, log) if ctx.swarm is not None else None  # agents queue for the machine
    b = _ensure_built(ctx, log)
    upd = {"rebuild_seconds": b.seconds if b.rebuilt else 0.0}
    values, tps, acc = [], [], {"train": 0.0, "eval": 0.0, "mem": 0.0}
    res: dict = {}
    if not b.ok:
        upd.update(status="build_failed", verdict="crash", reason="the extension did not compile",
                   log_tail=_tail(b.log))
    elif is_paired:  # the best's and the candidate's step, timed alternately; the medians are the values
        upd.update(paired.measure(ctx, f"exp-{eid:04d}-paired", log))
        values = tps = upd["metric_values"]
    else:
        judged, values, tps, acc, res = _judge(ctx, eid, ref, seeds, bool(row["code_diff"]), log)
        upd.update(judged)
    train_s, eval_s = acc["train"], acc["eval"]
    upd.update(seeds=[0] if is_paired else list(range(len(values) if upd["status"] == "done" else len(values) + 1)),
               metric_values=values, metric_mean=sum(values) / len(values) if values else None,
               throughput_values=tps, throughput_mean=sum(tps) / len(tps) if tps else None,
               train_seconds=train_s, eval_seconds=eval_s, peak_memory_mb=acc["mem"] or None,
               steps=res.get("steps"), tokens=res.get("tokens"))
    if upd["verdict"] == "keep" and ctx.swarm is not None:  # only if no other agent kept meanwhile
        swarm.confirm_keep(ctx, eid, best, upd)
    if slot is not None:  # after the keep is recorded: the next run in the queue sees the new best
        slot.release()
    verdict = upd["verdict"]
    best_metric = upd.get("best_metric", ref and ref.metric)
    time_reason = upd.pop("time_reason", None)
    if verdict == "keep":
        mean = upd["metric_mean"]
        evidence = (f"{ctx.s['metric']}: {mean:.6f} over {len(values)} {'pairs' if is_paired else 'seeds'} "
                    f"({' '.join(f'{v:.6f}' for v in values)}); best was {best_metric:.6f}, margin {upd['margin']:.6f}")
        if time_reason:
            evidence += f"\ntime control: {upd['time_verdict']}, {time_reason}"
        rerun = f"\nrun as: {description}" if what != description else ""
        sha = ctx.git.commit(f"{what}\n\n{evidence}{rerun}\nresearch experiment {eid}")
        upd["commit_sha"] = sha
        after = f"committed {sha[:10]} on {ctx.s['branch']}"
        if ctx.swarm is not None:
            swarm.publish(ctx, sha)
    else:
        ctx.git.restore()
        after = f"restored the tree to {base[:10]}; the diff is in the ledger (nanowhale research show {eid})"
    upd["finished_at"] = now()
    upd["total_seconds"] = time.perf_counter() - t_start
    ctx.ledger.update("experiments", eid, **upd)
    if ctx.swarm is not None:
        swarm.close_claims(ctx, eid)
    if upd["status"] != "done" and upd.get("log_tail"):
        log(upd["log_tail"])
    overhead = upd["total_seconds"] - train_s - eval_s - upd["rebuild_seconds"]
    log(block(experiment=eid, verdict=verdict, status=upd["status"], reason=upd.get("reason"),
              metric=ctx.s["metric"], mean=upd["metric_mean"] if values else "n/a",
              values=" ".join(f"{v:.6f}" for v in values) or "n/a", best="n/a" if best_metric is None else best_metric,
              **({"best_values": " ".join(f"{v:.6f}" for v in upd.get("best_values") or []) or "n/a",
                  "ratio": _fmt(upd.get("paired_ratio"), 4)} if is_paired else {}),
              **({"time_verdict": upd["time_verdict"], "time_ratio": _fmt(upd["time_ratio"], 4)}
                 if "time_verdict" in upd else {}),
              margin=upd.get("margin") or "n/a", throughput=round(upd["throughput_mean"]) if tps else "n/a",
              best_throughput=_round(upd.get("best_throughput", ref and ref.throughput)),
              rebuild_seconds=round(upd["rebuild_seconds"], 1),
              train_seconds=round(train_s, 1), eval_seconds=round(eval_s, 1), overhead_seconds=round(overhead, 1),
              total_seconds=round(upd["total_seconds"], 1), tree=after))
    return 0


def promotion_configs(ctx: Context, target, log=print) -> tuple[dict, dict]:
    """The start's and the best's experiment configs restated for the target rung (carry.py), both resolved
    and validated there before anything trains: ({"start": dict, "best": dict}, {which: [notes]}); for
    another entry than pretraining, the commits' own configs (None)."""
    if ctx.s["entry"] != PRETRAIN_ENTRY:
        return {"start": None, "best": None}, {}
    from nanowhale.research.carry import carried_experiment

    configs, notes = {}, {}
    for which, sha in (("start", ctx.s["start_commit"]), ("best", ctx.best_commit())):
        configs[which], notes[which] = carried_experiment(ctx, sha, target)
        log(f"{which} {sha[:10]} at {target.name}: " + ("; ".join(notes[which]) or "the rung's own config"))
    return configs, notes


def promote(to: str | None = None, repeats: int = 2, budget: str | None = None, path=".", log=print) -> int:
    """The start commit and the best commit at the next rung, `repeats` seeds each, interleaved so machine
    drift hits both; transferred when the best beats the start beyond the noise of these runs, on the
    scored slice and on the held-out slice."""
    ctx = Context.open(path)
    if repeats < 2:
        raise ValueError("--repeats must be >= 2 (the noise at the new rung is measured from these runs)")
    if ctx.s.get("free_size"):
        raise ValueError(f"tag {ctx.tag} was started with --free-size: its keeps found the best size for its budget, "
                         "not a change that carries to another rung, so they do not promote")
    if ctx.git.dirty():
        raise ValueError(f"promote checks out commits: the working tree has changes: {describe_dirty(ctx.git.dirty())} "
                         "(run or discard them first)")
    from nanowhale.research.ladder import next_rung

    ladder = ctx.ladder()
    target = rung(ladder, to) if to else next_rung(ladder, ctx.s["scale"])
    start, best = ctx.s["start_commit"], ctx.best_commit()
    if start == best:
        raise ValueError("nothing kept yet: the best commit is the start commit")
    import nanowhale._C as _C

    budget = budget or (target.budget_gpu if _C.cuda_available() else target.budget_cpu)
    parse_budget(budget)
    configs, carried = promotion_configs(ctx, target, log)
    pid = ctx.ledger.insert("promotions", {"agent": agent_id(), "tag": ctx.tag, "created_at": now(),
                                           "from_scale": ctx.s["scale"], "to_scale": target.name,
                                           "start_commit": start, "best_commit": best, "repeats": repeats,
                                           "carried": carried})
    runs = {"start": [], "best": []}
    crashed = None
    branch = ctx.s["branch"]
    try:
        for seed in range(repeats):
            for which, sha in (("start", start), ("best", best)):
                ctx.git("checkout", "-q", "--detach", sha)
                b = _ensure_built(ctx, log)
                if not b.ok:
                    crashed = f"{which} commit {sha[:10]} does not build"
                    break
                log(f"promote {target.name}: {which} {sha[:10]} seed {seed} ...")
                res = ctx.train_one(f"promote-{pid}-{which}-seed{seed}", seed, target, heldout=True, budget=budget,
                                    experiment=configs[which])
                _record_run(ctx, f"promote_{which}", seed, res, sha, target.name, budget, pid)
                if res["status"] != "done":
                    crashed = f"{which} commit {sha[:10]} seed {seed}: {res['status']}\n{res.get('log_tail', '')}"
                    break
                runs[which].append(res)
                log(f"  {ctx.s['metric']} {res[ctx.s['metric']]:.6f}, held-out {heldout_key(res)} "
                    f"{res[heldout_key(res)]:.6f}")
            if crashed:
                break
    finally:
        ctx.git("checkout", "-q", branch)
        _ensure_built(ctx, log)
    if crashed:
        ctx.ledger.update("promotions", pid, verdict="crash", reason=crashed)
        log(crashed)
        log(block(promotion=pid, verdict="crash"))
        return 1

    def judge(key: str) -> tuple[str, float, float, float, str]:
        a = [r[key] for r in runs["start"]]
        c = [r[key] for r in runs["best"]]
        ma, mc = sum(a) / len(a), sum(c) / len(c)
        pooled = math.sqrt((stats.mean_std(a)[1] ** 2 + stats.mean_std(c)[1] ** 2) / 2)
        sigma = max(pooled, stats.METRIC_SIGMA_FLOOR)
        m = stats.margin(ctx.s["k"], sigma, len(a), len(c))
        gain = (ma - mc) if (ctx.s["direction"] == "lower" or key == "heldout_val_bpb") else (mc - ma)
        verdict = "transferred" if gain > m else "scale-bound"
        return verdict, ma, mc, m, f"{key}: start {ma:.6f}, best {mc:.6f}, gain {gain:+.6f}, margin {m:.6f}"

    v, ma, mc, m, why = judge(ctx.s["metric"])
    hv, hma, hmc, hm, hwhy = judge(heldout_key(runs["start"][0]))
    ctx.ledger.update("promotions", pid, start_mean=ma, best_mean=mc, margin=m, heldout_start_mean=hma,
                      heldout_best_mean=hmc, heldout_margin=hm, verdict=v, heldout_verdict=hv, reason=f"{why}; {hwhy}")
    log(block(promotion=pid, to_scale=target.name, budget=budget, repeats=repeats, start_commit=start[:10],
              best_commit=best[:10], verdict=v, reason=why, heldout_verdict=hv, heldout_reason=hwhy))
    return 0


__all__ = ["baseline", "init", "promote", "run"]
