"""The training program: `nanowhale train` and nw.train(config).

One optimizer step = `accumulation` micro-batches of (micro_batch, seq_len) packed rows from the C++ loader,
forward_backward on each (grad_scale 1/accumulation), then Optimizer.step with the schedules' multipliers
(schedule.py) at progress p. The run directory:

    RUN/config.toml, config.json    the resolved configuration
    RUN/metrics.jsonl               one JSON object per logged step, eval point and event (a resume drops
                                    the records after its checkpoint, so each step appears once)
    RUN/checkpoints/                see checkpoint.py

On CPU everything is a function of the seed, so a resumed run reproduces an uninterrupted one bit for bit
(loader position, optimizer state, balance biases and step count are in the checkpoint; schedules are pure
functions of progress). Time-budgeted runs key their schedules on elapsed training time instead, which a
resume continues from the checkpoint but which no machine reproduces exactly.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nanowhale._C as _C
from nanowhale import checkpoint as ckpt_mod
from nanowhale import distributed, schedule
from nanowhale.config import RunConfig, merge, parse_override, resolve, to_toml, validate
from nanowhale.data.shards import make_loader, shard_paths
from nanowhale.data.tokenizer import Tokenizer
from nanowhale.evaluate import val_bpb

# Peak FLOP/s for the MFU estimate. GPU: dense bf16 tensor-core peak of the H100/H200 SXM. CPU: measured
# once per machine by an FMA loop (research/machine.py), times the threads. NANOWHALE_PEAK_FLOPS overrides both.
PEAK_FLOPS_CUDA = 989e12


def peak_flops(device: str, threads: int) -> float:
    env = os.environ.get("NANOWHALE_PEAK_FLOPS")
    if env:
        return float(env)
    if device == "cuda":
        return PEAK_FLOPS_CUDA
    from nanowhale.research.machine import cpu_peak_flops_per_core

    return cpu_peak_flops_per_core() * threads


def cache_dir() -> Path:
    """~/.cache/nanowhale, or $NANOWHALE_CACHE."""
    return Path(os.environ.get("NANOWHALE_CACHE") or Path.home() / ".cache" / "nanowhale")


def default_data_dir(vocab_size: int) -> Path:
    return cache_dir() / "data" / f"stdlib-v{vocab_size}"


def ensure_data(cfg: RunConfig, log=print, progress: bool = False) -> tuple[Path, Tokenizer]:
    """The prepared data directory and its tokenizer; prepares the offline default corpus if data.dir is empty."""
    vocab = cfg.model["vocab_size"]
    if cfg.data.dir:
        d = Path(cfg.data.dir)
        if not (d / "tokenizer.nwtok").exists():
            raise ValueError(f"data.dir: {d} has no tokenizer.nwtok (prepare it with `nanowhale data prepare --out {d}`)")
    else:
        from nanowhale.data.prepare import prepare

        d = default_data_dir(vocab)
        state = d / "prepare_state.json"
        if not (state.exists() and json.loads(state.read_text()).get("done")):
            log(f"preparing the default corpus (Python standard library, vocab {vocab}) in {d} ...")
        prepare(out_dir=d, vocab_size=vocab, tokenizer_train_bytes=int(cfg.data.tokenizer_train_mb * 1e6),
                shard_tokens=cfg.data.shard_tokens, val_every=50, progress=progress)
    tok = Tokenizer.load(str(d / "tokenizer.nwtok"))
    if tok.vocab_size != vocab:
        raise ValueError(f"model.vocab_size: {vocab}, but the tokenizer in {d} has {tok.vocab_size} tokens "
                         f"(set model.vocab_size={tok.vocab_size} or prepare data with --vocab-size {vocab})")
    return d, tok


def choose_device(name: str) -> str:
    if name == "auto":
        return "cuda" if _C.cuda_available() else "cpu"
    if name == "cuda" and not _C.cuda_available():
        raise ValueError("train.device: cuda, but no GPU is available (or nanowhale was built without CUDA)")
    return name


def choose_precision(name: str, device: str) -> str:
    if name == "auto":  # bf16 where tensor cores make it fast; the CPU emulates it only for testing
        return "bf16" if device == "cuda" else "fp32"
    return name


def choose_cuda_graphs(name: str, device: str) -> bool:
    if name == "on" and device != "cuda":
        raise ValueError(f"train.cuda_graph: on needs train.device cuda (this run is on {device}); use auto or off")
    return device == "cuda" and name != "off"


def cuda_graph_failure(model, opt) -> str:
    """Why a step's CUDA graph could not be captured ("" when none failed); that work then runs eagerly."""
    for what, stats in (("forward/backward", model.cuda_graph_stats()), ("optimizer", opt.cuda_graph_stats())):
        if stats["failure"]:
            return f"{what}: {stats['failure']}"
    return ""


def describe_cuda_graphs(model, opt) -> str:
    """The summary's cuda_graph line: off, or on with the graph launches, or why a capture failed."""
    if not model.cuda_graphs:
        return "off"
    if why := cuda_graph_failure(model, opt):
        return f"failed, eager ({why})"
    launches = model.cuda_graph_stats()["replays"] + opt.cuda_graph_stats()["replays"]
    return f"on ({launches} graph launches)"


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


@dataclass
class Clock:
    """Training seconds for time-budgeted progress: the first `skip` steps are not counted."""

    skip: int
    seconds: float = 0.0

    def add(self, step: int, dt: float) -> None:
        if step >= self.skip:
            self.seconds += dt


@dataclass
class Progress:
    """mode "bar": a tqdm bar; "lines": a plain line every ~10% (logs stay short); "off": nothing (ranks > 0)."""

    total: float
    mode: str
    time_based: bool
    bar: object = None
    last_print: float = -1.0
    shown: float = 0.0
    lines: list = field(default_factory=list)

    def __post_init__(self):
        if self.mode == "bar":
            try:
                from tqdm import tqdm
            except ImportError:  # a dependency, but a bare source checkout may lack it
                self.mode = "lines"
                return
            self.bar = tqdm(total=self.total, unit="s" if self.time_based else "step", dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}{postfix}]"
                            if self.time_based else None)

    def update(self, value: float, step: int, loss: float, tok_s: float) -> None:
        value = min(value, self.total)  # a time-budgeted run's last step ends past the budget
        if self.bar is not None:
            self.bar.update(value - self.shown)
            self.shown = value
            self.bar.set_postfix_str(f"step {step} loss {loss:.4f} {tok_s:,.0f} tok/s", refresh=False)
        elif self.mode == "lines" and (value / self.total - self.last_print >= 0.1 or value >= self.total):
            self.last_print = value / self.total
            print(f"step {step} ({100 * value / self.total:.0f}%) loss {loss:.4f} {tok_s:,.0f} tok/s", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _as_config(config) -> RunConfig:
    if config is None:
        return resolve()
    if isinstance(config, RunConfig):
        validate(config)
        return config
    if isinstance(config, dict):
        return RunConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return resolve(files=[config])
    raise TypeError(f"config must be a RunConfig, dict, TOML path or None, got {type(config).__name__}")


def _run_dir(cfg: RunConfig) -> Path:
    if cfg.run.dir:
        return Path(cfg.run.dir)
    return Path("runs") / (cfg.run.name or time.strftime("%Y%m%d-%H%M%S"))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops the records of steps after `step` (done after the checkpoint a resume starts from)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if rec.get("step", 0) <= step:
            keep.append(line)
    ckpt_mod.write_text_atomic(path, "".join(x + "\n" for x in keep))


def train(config=None, *, resume: str | Path | None = None, overrides: list[str] | None = None,
          progress: bool | None = None, log=print, _stop_after_steps: int | None = None) -> dict:
    """Trains (or resumes) a run; returns the summary dict (see SUMMARY_KEYS) plus 'losses' (this session's
    per-step losses) and 'samples'.

    config: RunConfig, dict, TOML path or None (the tiny preset). resume: a run directory to continue from
    its latest checkpoint; its saved config is used, with `overrides` (KEY=VALUE strings) applied on top.
    progress: True a tqdm bar; None a bar on a terminal, else a plain line every ~10%; False those plain lines.
    """
    t_start = time.perf_counter()
    ck = None
    if resume is not None:
        ck = ckpt_mod.open_checkpoint(resume)
        cfg = RunConfig.from_dict(ck.config)
        if ck.dir.parent.name != "checkpoints":
            raise ValueError(f"--resume: {ck.dir} is not inside a run directory (RUN/checkpoints/step_N); "
                             "give the run directory")
        run_dir = ck.dir.parent.parent
        if overrides:
            for o in overrides:
                merge(cfg, parse_override(o))
            validate(cfg)
    else:
        cfg = _as_config(config)
        for o in overrides or []:
            merge(cfg, parse_override(o))
        validate(cfg)
        run_dir = _run_dir(cfg)
        if (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").glob("step_*")):
            raise ValueError(f"run.dir: {run_dir} already holds checkpoints; continue it with --resume {run_dir} "
                             "or choose another run.name / run.dir")
    tc = cfg.train
    # batch_tokens is the global batch: each of the world's ranks runs `accum` of its micro-batches.
    world = distributed.launched_world_size()
    accum = distributed.local_accumulation(
        cfg.accumulation(), world, f"train.batch_tokens: {tc.batch_tokens} tokens are {cfg.accumulation()} "
        f"micro-batches of train.micro_batch * model.seq_len = {tc.micro_batch * cfg.model['seq_len']} tokens")
    device = choose_device(tc.device)
    use_graphs = choose_cuda_graphs(tc.cuda_graph, device)
    group = distributed.init(device, tc.comm_timeout)
    group.check_same("configuration", json.dumps(cfg.to_dict(), sort_keys=True))
    if group.is_main:
        if progress is None and sys.stderr.isatty():
            progress = True
    else:
        progress, log = False, lambda *a, **k: None

    if tc.threads:
        _C.set_num_threads(tc.threads)
    elif device == "cpu" and group.local_world_size > 1:  # the ranks on one machine share its cores
        _C.set_num_threads(max(1, _C.get_num_threads() // group.local_world_size))
    if not group.is_main:  # rank 0 prepares the default corpus; the others then find it ready
        group.barrier("waiting for rank 0 to prepare the data", timeout=distributed.LONG_WAIT_S)
    data_dir, tok = ensure_data(cfg, log=log, progress=bool(progress))
    if group.is_main:
        group.barrier("waiting for rank 0 to prepare the data", timeout=distributed.LONG_WAIT_S)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(cfg.to_dict()))
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))

    mcfg = cfg.model_config()
    model = _C.Model(mcfg, seed=tc.seed, device=device)
    model.precision = choose_precision(tc.precision, device)
    model.cuda_graphs = use_graphs
    opt = _C.Optimizer(model, cfg.optimizer_config())
    T, B = mcfg.seq_len, tc.micro_batch
    loader = make_loader(data_dir, "train", B, T, tok, packed=True, seed=tc.seed, rank=group.rank,
                         world_size=group.world_size)
    val_paths = shard_paths(data_dir, "val")
    split_tokens = loader.total_tokens
    step_tokens = accum * world * B * (T + 1)  # what a step takes from the split: rows of T + 1 tokens
    time_based = tc.time_budget > 0
    if time_based:
        plan = f"a {tc.time_budget:g} s budget; one epoch is {split_tokens / step_tokens:,.0f} steps"
    else:
        plan = f"{tc.steps} steps x {step_tokens:,} tokens = {tc.steps * step_tokens / split_tokens:.2f} epochs"
    log(f"data: {data_dir}: train split {split_tokens:,} tokens; this run: {plan}")

    step, tokens_seen = 0, 0
    clock = Clock(tc.clock_skip_steps)
    if ck is not None:
        want = ck.meta.get("tokenizer", {}).get("fingerprint")
        if want and want != tok.fingerprint:
            raise ValueError(f"data.dir: the tokenizer in {data_dir} ({tok.fingerprint}) is not the one this run "
                             f"trained with ({want})")
        ck.load_model(model)
        ck.load_optimizer(model, opt)
        step, tokens_seen, states, clock.seconds = ck.resume_state()  # one loader state per rank
        if len(states) != group.world_size:
            raise ValueError(f"--resume: {ck.dir} was written by a run of {len(states)} process(es); resume it with "
                             f"the same number (this run has {group.world_size})")
        loader.set_state(states[group.rank])
        log(f"resuming {run_dir} at step {step}")
    last_ckpt = ck.dir if ck is not None else None

    warned_repeat = loader.epoch > 1.0
    warned_graph = False
    budget = tc.time_budget if time_based else float(tc.steps)
    threads = _C.get_num_threads()
    peak = peak_flops(device, threads) * world  # the whole job's
    flops_tok = mcfg.flops_per_token()
    if ck is not None and group.is_main:
        _truncate_metrics(run_dir / "metrics.jsonl", step)
    metrics = open(run_dir / "metrics.jsonl", "a") if group.is_main else None  # rank 0 alone writes

    def emit(rec: dict) -> None:
        if metrics:
            metrics.write(json.dumps(rec) + "\n")
            metrics.flush()

    def progress_of(step: int) -> float:
        return min(1.0, clock.seconds / tc.time_budget) if time_based else step / tc.steps

    def save(step: int) -> Path:
        group.check_replicas(model, step)
        states = group.gather(loader.state().tolist(), "loader-state gather")  # every rank's position
        if not group.is_main:
            return run_dir / "checkpoints" / f"step_{step:06d}"
        meta = {"config": cfg.to_dict(), "tokens": tokens_seen, "loader_state": states[0],
                "loader_states": states, "world_size": group.world_size,
                "train_seconds": clock.seconds, "seed": tc.seed, "rng": {"model_init_seed": tc.seed,
                "loader_seed": tc.seed, "note": "all randomness is seeded; the loader position is loader_state"},
                "tokenizer": {"file": ckpt_mod.TOKENIZER_FILE, "fingerprint": tok.fingerprint,
                              "source": str(data_dir / "tokenizer.nwtok")},
                "data_dir": str(data_dir), "val_bpb": result.get("val_bpb")}
        return ckpt_mod.save(run_dir / "checkpoints", step, model, opt, meta, data_dir / "tokenizer.nwtok",
                             keep=cfg.run.keep)

    def run_eval(step: int) -> dict:
        t0 = time.perf_counter()
        ev = val_bpb(model, tok, val_paths, cfg.eval.tokens, cfg.eval.batch_size)
        emit({"event": "eval", "step": step, "val_bpb": ev["val_bpb"], "val_loss": ev["val_loss"],
              "val_tokens": ev["tokens"], "seconds": time.perf_counter() - t0})
        return ev

    emit({"event": "resume" if ck is not None else "start", "step": step, "device": device, "threads": threads,
          "params_total": mcfg.num_params(), "params_active": mcfg.num_active_params(),
          "accumulation": accum, "world_size": group.world_size, "batch_tokens": tc.batch_tokens})
    result: dict = {"status": "done", "run_dir": str(run_dir), "val_bpb": None, "rank": group.rank}
    losses: list[float] = []
    bar = Progress(budget, "bar" if progress else "lines" if group.is_main else "off", time_based)
    compute_s = step_s = comm_s = 0.0
    t_train0 = time.perf_counter()
    steps_this_session = 0
    stop_reason = None
    try:
        while progress_of(step) < 1.0:
            p = progress_of(step)
            profiled = step + 1 == cfg.run.profile_step
            if profiled:  # on a GPU the profiler syncs around each op, so this one step runs slower
                _C.reset_op_times()
                _C.profile_ops(True)
            t0 = time.perf_counter()
            c = 0.0
            for _ in range(accum):
                batch = loader.next()
                if not warned_repeat and loader.epoch > 1.0:
                    warned_repeat = True
                    log(f"nanowhale: warning: at step {step + 1} the run starts a second pass over its "
                        f"{split_tokens:,} training tokens; from here it trains on text it has already seen, so "
                        "the training loss will fall faster than val_bpb. Give it more data (data.dir) or fewer "
                        "steps.")
                    emit({"event": "data_repeat", "step": step + 1, "epoch": loader.epoch})
                tc0 = time.perf_counter()
                # deferred: the losses are summed on the device and read once per step, below
                model.forward_backward(batch[:, :-1], batch[:, 1:], grad_scale=1.0 / (accum * world), defer_loss=True)
                c += time.perf_counter() - tc0
            tc0 = time.perf_counter()
            group.all_reduce_gradients(model)  # the global batch's mean gradient and routing counts
            comm = time.perf_counter() - tc0
            lr = schedule.lr_mult(p, tc.warmup_frac, tc.decay_frac, tc.final_lr_frac)
            mom = schedule.muon_momentum(p, tc.momentum_start, cfg.optim["muon_momentum"], tc.momentum_warmup_frac)
            gamma = schedule.balance_gamma(p, cfg.model["balance_gamma"], tc.balance_decay_start, tc.balance_decay_end)
            tc0 = time.perf_counter()
            gnorm = opt.step(lr_mult=lr, wd_mult=schedule.wd_mult(p, tc.wd_decay), muon_momentum=mom,
                             balance_gamma=gamma)
            model.zero_grad()
            # after the optimizer's launch, so the step's one loss read does not hold it back
            loss_sum, bal_sum = model.take_loss_sums()
            c += time.perf_counter() - tc0
            tc0 = time.perf_counter()
            loss_sum, bal_sum = group.sum([loss_sum, bal_sum])
            comm += time.perf_counter() - tc0
            dt = time.perf_counter() - t0
            if profiled:
                _C.profile_ops(False)
                emit({"event": "op_profile", "step": step + 1, "step_seconds": dt,
                      "ops": {name: {"seconds": sec, "calls": calls} for name, (sec, calls) in _C.op_times().items()}})
            if use_graphs and not warned_graph and (why := cuda_graph_failure(model, opt)):
                warned_graph = True
                log(f"nanowhale: warning: a CUDA graph could not be captured at step {step + 1}, so that work "
                    f"runs eagerly (same results, slower): {why}. train.cuda_graph = \"off\" silences this.")
                emit({"event": "cuda_graph_failed", "step": step + 1, "reason": why})
            if time_based and world > 1:  # every rank keys its schedules on the same clock
                dt = group.max([dt])[0]
            loss = loss_sum / (accum * world)
            if not (math.isfinite(loss) and math.isfinite(gnorm)):
                where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written"
                stop_reason = (f"non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} at step "
                               f"{step + 1} (loss {loss}, grad norm {gnorm}); stopping, {where}. "
                               "Lower the learning rates (optim.*) or check the data.")
                emit({"event": "diverged", "step": step + 1, "loss": loss, "grad_norm": gnorm})
                result["status"] = "diverged"
                break
            clock.add(step, dt)
            step += 1
            steps_this_session += 1
            tokens_seen += tc.batch_tokens
            losses.append(loss)
            tok_s = tc.batch_tokens / dt
            if step % cfg.run.log_every == 0 or progress_of(step) >= 1.0:
                rec = {"step": step, "tokens": tokens_seen, "loss": loss, "balance_loss": bal_sum / (accum * world),
                       "lr_mult": lr, "muon_lr": cfg.optim["muon_lr"] * lr, "muon_momentum": mom,
                       "balance_gamma": gamma, "grad_norm": gnorm, "tok_per_s": tok_s,
                       "gflops": tok_s * flops_tok / 1e9, "mfu": tok_s * flops_tok / peak,
                       "step_seconds": dt, "compute_seconds": c, "allreduce_seconds": comm,
                       "progress": progress_of(step), "train_seconds": clock.seconds, "epoch": loader.epoch,
                       "data_seen": min(1.0, loader.epoch)}
                rec["experts"] = [{"layer": s["layer"], "load": list(s["tokens_per_expert"]),
                                   "max_violation": s["max_violation"], "dead": s["dead_experts"],
                                   "bias": list(s["bias"])}
                                  for s in model.routing_stats()]
                emit(rec)
            bar.update(clock.seconds if time_based else step, step, loss, tok_s)
            if steps_this_session > 1:  # the first step warms caches up
                compute_s += c
                comm_s += comm
                step_s += time.perf_counter() - t0  # the whole step: data, compute, schedules, logging
            if cfg.eval.every and step % cfg.eval.every == 0 and progress_of(step) < 1.0:
                result["val_bpb"] = run_eval(step)["val_bpb"]
            if _stop_after_steps is not None and steps_this_session >= _stop_after_steps:
                last_ckpt = save(step)
                result["status"] = "stopped"
                break
            if cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0 and progress_of(step) < 1.0:
                last_ckpt = save(step)
    finally:
        bar.close()
    train_wall = time.perf_counter() - t_train0

    if result["status"] == "done":
        ev = run_eval(step)
        result["val_bpb"], result["val_loss"] = ev["val_bpb"], ev["val_loss"]
        last_ckpt = save(step)
    if stop_reason:
        log(f"nanowhale: {stop_reason}")
    samples = []
    if result["status"] == "done" and cfg.sample.n > 0 and group.is_main:
        from nanowhale.generate import sample

        s = cfg.sample
        from nanowhale.generate import prompts_from_documents

        pool = s.prompts or prompts_from_documents(tok, val_paths, s.n) or [""]
        prompts = [pool[i % len(pool)] for i in range(s.n)]
        samples = sample(model, tok, prompts, 1, s.max_new_tokens, s.temperature, s.top_k, s.top_p, s.seed)
        emit({"event": "samples", "step": step, "samples": samples})
    toks_session = steps_this_session * tc.batch_tokens
    result.update({
        "training_seconds": clock.seconds if time_based else train_wall,
        "total_seconds": time.perf_counter() - t_start,
        "steps": step,
        "tokens": tokens_seen,
        "epochs": loader.epoch,
        "data_seen": min(1.0, loader.epoch),
        "split_tokens": split_tokens,
        "tokens_per_second": toks_session / train_wall if train_wall > 0 else 0.0,
        "mfu": (toks_session / train_wall) * flops_tok / peak if train_wall > 0 else 0.0,
        "outside_compute_fraction": (1 - compute_s / step_s) if step_s > 0 else 0.0,
        "allreduce_fraction": comm_s / step_s if step_s > 0 else 0.0,
        "world_size": group.world_size,
        "peak_memory_mb": peak_memory_mb(),
        "params_total": mcfg.num_params(),
        "params_active": mcfg.num_active_params(),
        "device": device,
        "precision": model.precision,
        "cuda_graph": describe_cuda_graphs(model, opt),
        "checkpoint": str(last_ckpt) if last_ckpt else None,
        "samples": samples,
        "losses": losses,
    })
    emit({"event": "end", **{k: v for k, v in result.items() if k not in ("losses", "samples")}})
    if metrics:
        metrics.close()
    return result


SUMMARY_KEYS = ("status", "val_bpb", "training_seconds", "total_seconds", "steps", "tokens", "epochs", "data_seen",
                "split_tokens", "tokens_per_second", "mfu", "outside_compute_fraction", "allreduce_fraction",
                "peak_memory_mb", "params_total", "params_active", "device", "precision", "cuda_graph", "world_size", "run_dir",
                "checkpoint")


def format_summary(result: dict) -> str:
    """One `key: value` per line, after a '---' line, so scripts can grep it."""
    lines = ["---"]
    for k in SUMMARY_KEYS:
        v = result.get(k)
        if isinstance(v, float):
            v = f"{v:.6f}" if k in ("val_bpb", "mfu", "outside_compute_fraction", "allreduce_fraction") else \
                f"{v:.4f}" if k in ("epochs", "data_seen") else f"{v:.2f}"
        lines.append(f"{k}: {v}")
    return "\n".join(lines)


__all__ = ["SUMMARY_KEYS", "cache_dir", "default_data_dir", "ensure_data", "format_summary", "train"]
