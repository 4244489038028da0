"""The one-page map `research init` writes to research/map.md and prints: what an agent may set (every
config key with its value at the rung and its valid range), the files it may edit (one line each), the
budget in tokens, tokens per active parameter and the expected minutes per run; enough to start the first
experiment without reading the code first (agent_recipes/pretrain.md starts from it).
"""

from __future__ import annotations

from pathlib import Path

MAP_FILE = "research/map.md"

# Valid range of every key an experiment may set (config.validate and the C++ validators are the truth;
# test_research_onboard.py checks that every key has an entry here and that nothing else does).
RANGES = {
    "model.seq_len": "[1, 2^24]", "model.d_model": "[1, 65536], a multiple of n_head",
    "model.n_layer": "[1, 4096]", "model.n_head": "[1, 4096], a multiple of n_kv_head",
    "model.n_kv_head": ">= 1, divides n_head", "model.head_dim": "[2, 65536], even (RoPE)",
    "model.n_dense_layers": "[0, n_layer] (the first layers are dense, the rest MoE)",
    "model.dense_hidden": "[1, 2^18]", "model.n_experts": "[1, 4096]", "model.top_k": "[1, n_experts]",
    "model.expert_hidden": "[1, 2^18]", "model.n_shared": "[0, 4096] (always-on experts)",
    "model.shared_hidden": "[1, 2^18]", "model.activation": "relu2 or swiglu", "model.rope_base": "> 1",
    "model.softcap": ">= 0 (0: off)", "model.tie_embeddings": "true or false",
    "model.window_pattern": "S/L string, repeated over layers (S: short_window)", "model.short_window": ">= 1",
    "model.route_scale": "> 0", "model.balance_gamma": ">= 0 (balance-bias speed)",
    "model.balance_alpha": ">= 0 (sequence balance loss)", "model.norm_eps": "> 0",
    "optim.muon_lr": ">= 0", "optim.muon_momentum": "[0, 1)", "optim.muon_weight_decay": ">= 0",
    "optim.ns_steps": "[1, 20]", "optim.nesterov": "true or false", "optim.grad_clip": ">= 0 (0: off)",
    **{f"optim.{g}.{k}": r for g in ("embed", "head", "router", "scalar")
       for k, r in (("lr", ">= 0"), ("beta1", "[0, 1)"), ("beta2", "[0, 1)"), ("eps", "> 0"),
                    ("weight_decay", ">= 0"))},
    "train.clock_skip_steps": "[0, 1e9]",
    "train.batch_tokens": "a multiple of micro_batch * seq_len (the budget's steps follow)",
    "train.micro_batch": "[1, 2^20] (rows per forward: memory, not math)",
    "train.warmup_frac": "[0, 1], warmup_frac + decay_frac <= 1", "train.decay_frac": "[0, 1]",
    "train.final_lr_frac": "[0, 1]", "train.wd_decay": "true or false", "train.momentum_start": "[0, 1]",
    "train.momentum_warmup_frac": "[0, 1]", "train.balance_decay_start": "[0, 1]",
    "train.balance_decay_end": "[balance_decay_start, 1]", "train.device": "auto, cpu or cuda",
    "train.precision": "auto, bf16 or fp32 (matmul operands; auto: bf16 on cuda, fp32 on cpu)",
    "train.cuda_graph": "auto, on or off (each step replayed as CUDA graphs; same results; auto: on on cuda)",
    "train.comm_timeout": "(0, 1e8] seconds (data parallel only)",
}

# What an agent may edit besides the config: (path or glob, what it is). Globs list each op once.
EDITABLE = (
    ("research/experiment.toml", "the experiment config: any key below (model, optim, train)"),
    ("nanowhale/trainer.py", None),
    ("nanowhale/schedule.py", None),
    ("csrc/model/model.cpp", None),
    ("csrc/model/config.cpp", None),
    ("csrc/train/optimizer.cpp", None),
    ("csrc/ops/*.h", None),
)


def first_line(path: Path) -> str:
    """The first sentence-line of a file's opening docstring or comment."""
    for line in path.read_text(errors="replace").splitlines():
        s = line.strip().lstrip("/#").strip().strip('"').strip()
        if s and not s.startswith(("pragma", "include", "from __future__")):
            return s
    return ""


def editable_files(repo: Path) -> list[tuple[str, str]]:
    out = []
    for pattern, what in EDITABLE:
        for p in sorted(repo.glob(pattern)) or [repo / pattern]:
            if p.exists():
                out.append((str(p.relative_to(repo)), what or first_line(p)))
    return out


def _toml(v) -> str:
    from nanowhale.config import to_toml

    return to_toml({"v": v}).split("=", 1)[1].strip()


def keys_table(cfg, harness_keys: set[str]) -> list[tuple[str, str, str]]:
    """(key, current value as TOML, valid range) rows; an Adam group's five keys share one row."""
    from nanowhale.research.carry import flat

    rows, groups = [], {}
    for k, v in flat(cfg).items():
        if k in harness_keys:
            continue
        parts = k.split(".")
        if len(parts) == 3:  # optim.GROUP.FIELD
            groups.setdefault(parts[1], []).append((parts[2], _toml(v), RANGES[k]))
            continue
        rows.append((k, _toml(v), RANGES[k]))
    for g, fields in groups.items():
        rows.append((f"optim.{g}.{{{', '.join(f for f, _, _ in fields)}}}", ", ".join(v for _, v, _ in fields),
                     ", ".join(r for _, _, r in fields)))
    return rows


def render(ctx, tokens_per_second: float) -> str:
    """The map of the current tag, as markdown."""
    from nanowhale.research.carry import HARNESS_KEYS
    from nanowhale.research.size import Size

    rung = ctx.rung()
    cfg = ctx.resolve()  # the current experiment; the size class is the rung's own
    size = Size.of(ctx.resolve({}))
    tokens = cfg.train.steps * cfg.train.batch_tokens
    minutes = tokens / tokens_per_second / 60 if tokens_per_second > 0 else float("nan")
    tol = rung.size_tolerance
    lines = [
        f"# Research map: tag {ctx.tag} (branch {ctx.s['branch']})",
        "",
        f"- Rung `{rung.name}` (preset `{rung.preset}`), budget `{ctx.s['budget']}`: {cfg.train.steps} steps of "
        f"{cfg.train.batch_tokens:,} tokens = **{tokens:,} training tokens**.",
        f"- Model: **{Size.of(cfg).active_params:,} active parameters**, {Size.of(cfg).flops_per_token:.4g} "
        f"FLOPs/token; **{tokens / Size.of(cfg).active_params:.2f} tokens per active parameter**.",
        f"- Size class (locked{' : NOT locked, --free-size' if ctx.s.get('free_size') else ''}): active parameters "
        f"{size.active_params * (1 - tol):,.0f} .. {size.active_params * (1 + tol):,.0f}, FLOPs/token "
        f"{size.flops_per_token * (1 - tol):.4g} .. {size.flops_per_token * (1 + tol):.4g} (±{tol:.0%}): "
        "reallocate (depth for width, experts for expert width, head_dim), do not shrink.",
        f"- Expected **{minutes:.1f} minutes per run** of training ({tokens_per_second:,.0f} tokens/s measured by a "
        "short probe now; evaluation adds a little); a keep costs about 2 more runs (confirmation seeds).",
        f"- Metric: `{ctx.s['metric']}` ({ctx.s['direction']} is better), k = {ctx.s['k']} sigma.",
        "",
        "## Config keys (`research/experiment.toml`; the harness sets data, eval, run, sample, seed, steps, vocab)",
        "",
        "| key | current value | valid |",
        "|---|---|---|",
        *(f"| `{k}` | {v} | {r} |" for k, v, r in keys_table(cfg, HARNESS_KEYS)),
        "",
        "## Files you may edit",
        "",
        *(f"- `{p}`: {what}" for p, what in editable_files(ctx.repo)),
        "",
        "Protected (`run` refuses if changed): " + ", ".join(f"`{p}`" for p in ctx.s["protected"]) + ".",
        "",
        "## Commands",
        "",
        "`nanowhale research baseline` (once), then per idea: edit, `nanowhale research run -m \"what and why\"`;"
        " `nanowhale research check` after a C++ change; `status`, `show ID [--diff]`, `promote`.",
    ]
    return "\n".join(lines) + "\n"


def write_map(ctx, log=print) -> Path:
    """Measures a short probe's tokens/s at the rung, writes research/map.md and prints it."""
    from nanowhale.research.speed import probe

    tps = probe(ctx.resolve(), steps=4)["tokens_per_second"]
    text = render(ctx, tps)
    path = ctx.repo / MAP_FILE
    path.write_text(text)
    log(text)
    return path


__all__ = ["MAP_FILE", "RANGES", "editable_files", "render", "write_map"]
