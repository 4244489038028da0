"""Promotion carries the change, not the numbers: a commit's experiment config at one rung, restated for
another rung.

The change is the difference between the commit's resolved config and the rung's own (its preset with the
ladder's `set`), over the sections an experiment may set (model, optim, train; the harness's keys, the
budget's step count and the data's vocab_size excluded). At the target rung it is applied to that rung's
config:
- model-shape keys (SHAPE_KEYS) and train.batch_tokens as ratios to the rung's value, rounded to a valid
  value (head_dim even, d_model a multiple of n_head, n_kv_head a divisor of n_head, top_k <= n_experts,
  n_dense_layers <= n_layer, batch_tokens a multiple of micro_batch * seq_len); a shape key that was 0 at
  the source rung is carried as a value;
- every other key as its value (learning rates, schedules, activation, ...).
The carried config is resolved and validated at the target before anything trains; one that does not
validate is an error naming the carried keys.

    exp, notes = carried_experiment(ctx, commit, target_rung)   # an experiment-config dict for the target
"""

from __future__ import annotations

import math

SHAPE_KEYS = ("seq_len", "d_model", "n_layer", "n_head", "n_kv_head", "head_dim", "n_dense_layers", "dense_hidden",
              "n_experts", "top_k", "expert_hidden", "n_shared", "shared_hidden", "short_window")
RATIO_KEYS = tuple(f"model.{k}" for k in SHAPE_KEYS) + ("train.batch_tokens",)
CARRIED_SECTIONS = ("model", "optim", "train")
HARNESS_KEYS = {"model.vocab_size", "train.steps", "train.time_budget", "train.seed", "train.threads"}


def flat(cfg) -> dict:
    """{"model.d_model": 128, "optim.embed.lr": 0.1, "train.warmup_frac": 0.0, ...} over CARRIED_SECTIONS."""
    d = cfg.to_dict()
    out = {}

    def walk(prefix, node):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(f"{prefix}.{k}", v)
            else:
                out[f"{prefix}.{k}"] = v
    for section in CARRIED_SECTIONS:
        walk(section, d[section])
    return out


def change(rung_cfg, cfg) -> dict:
    """{key: (the rung's value, the commit's value)} for every carried key that differs."""
    base, new = flat(rung_cfg), flat(cfg)
    return {k: (base[k], v) for k, v in new.items() if k not in HARNESS_KEYS and base[k] != v}


def nested(values: dict) -> dict:
    """{"optim.embed.lr": 0.1} -> {"optim": {"embed": {"lr": 0.1}}} (an experiment config)."""
    out: dict = {}
    for key, v in values.items():
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return out


def _nearest(value: float, candidates) -> int:
    return min(candidates, key=lambda c: (abs(c - value), c))


def _round_shapes(target: dict, raw: dict) -> dict:
    """Ratio-carried values (floats in raw) rounded to integers the model and the trainer accept, given the
    rest of the target's config (target: flat, already holding the value-carried keys)."""
    t = dict(target)
    out = {}

    def put(key, value):
        out[key] = t[key] = int(value)
    for key in ("model.seq_len", "model.n_layer", "model.n_experts", "model.dense_hidden", "model.expert_hidden",
                "model.n_shared", "model.shared_hidden", "model.short_window"):
        if key in raw:
            put(key, max(0 if key == "model.n_shared" else 1, math.floor(raw[key] + 0.5)))
    if "model.head_dim" in raw:
        put("model.head_dim", max(2, 2 * math.floor(raw["model.head_dim"] / 2 + 0.5)))
    if "model.n_head" in raw:  # a divisor of d_model unless d_model moves too, a multiple of n_kv_head unless it moves
        limit = max(1, 2 * math.ceil(raw["model.n_head"]))
        ok = [h for h in range(1, limit + 1)
              if ("model.d_model" in raw or t["model.d_model"] % h == 0)
              and ("model.n_kv_head" in raw or h % t["model.n_kv_head"] == 0)]
        put("model.n_head", _nearest(raw["model.n_head"], ok or [t["model.n_head"]]))
    if "model.n_kv_head" in raw:
        put("model.n_kv_head", _nearest(raw["model.n_kv_head"], [h for h in range(1, t["model.n_head"] + 1)
                                                                   if t["model.n_head"] % h == 0]))
    if "model.d_model" in raw:
        h = t["model.n_head"]
        put("model.d_model", max(h, h * math.floor(raw["model.d_model"] / h + 0.5)))
    if "model.top_k" in raw:
        put("model.top_k", min(max(1, math.floor(raw["model.top_k"] + 0.5)), t["model.n_experts"]))
    if "model.n_dense_layers" in raw:
        put("model.n_dense_layers", min(max(0, math.floor(raw["model.n_dense_layers"] + 0.5)), t["model.n_layer"]))
    if "train.batch_tokens" in raw:
        row = t["train.micro_batch"] * t["model.seq_len"]
        put("train.batch_tokens", row * max(1, math.floor(raw["train.batch_tokens"] / row + 0.5)))
    return out


def carry(diff: dict, target_cfg) -> tuple[dict, list[str]]:
    """The change applied to the target rung's config: (flat {key: value} to set, one note per key)."""
    base = flat(target_cfg)
    target = dict(base)
    values, raw, notes = {}, {}, []
    for key, (was, now) in diff.items():
        if key in RATIO_KEYS and was:
            raw[key] = target[key] * now / was
        else:
            values[key] = now
    target.update(values)
    values.update(_round_shapes(target, raw))
    for key, (was, now) in diff.items():
        how = f"x{now / was:.4g}" if key in raw else "as a value"
        notes.append(f"{key} {was} -> {now} ({how}): {base[key]} -> {values[key]}")
    return values, notes


def carried_experiment(ctx, commit: str, target) -> tuple[dict, list[str]]:
    """The experiment config (a dict) that restates `commit`'s change for the target rung, resolved and
    validated there: (config, notes). ValueError naming the carried keys when it cannot be carried."""
    from nanowhale.config import tomllib
    from nanowhale.research.context import EXPERIMENT_CONFIG

    text = ctx.git("show", f"{commit}:{EXPERIMENT_CONFIG}", check=False)
    try:
        exp = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{EXPERIMENT_CONFIG} at {commit[:10]}: invalid TOML: {e}") from None
    source = ctx.rung()
    try:
        diff = change(ctx.resolve({}, source), ctx.resolve(exp, source))
    except ValueError as e:
        raise ValueError(f"{EXPERIMENT_CONFIG} at {commit[:10]} does not resolve at {source.name}: {e}") from None
    values, notes = carry(diff, ctx.resolve({}, target))
    out = nested(values)
    try:
        ctx.resolve(out, target)
    except ValueError as e:
        raise ValueError(f"cannot carry {commit[:10]}'s change from {source.name} to {target.name}: {e} "
                         f"(carried: {'; '.join(notes)})") from None
    return out, notes


def best_config(ctx, target):
    """The research branch's best commit's config at the target rung (a Rung, or its name): its change
    carried, resolved under the harness's keys. What `promote` trains the best as."""
    target = ctx.rung(target) if isinstance(target, str) else target
    exp, _ = carried_experiment(ctx, ctx.best_commit(), target)
    return ctx.resolve(exp, target)


__all__ = ["RATIO_KEYS", "SHAPE_KEYS", "best_config", "carried_experiment", "carry", "change", "flat", "nested"]
