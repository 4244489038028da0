"""Training configuration: presets, TOML files and `--set key=value` overrides, resolved into one RunConfig.

    cfg = resolve(preset="tiny", files=["exp.toml"], overrides=["model.n_experts=16", "optim.muon_lr=0.03"])
    cfg.to_dict()  ->  {"preset", "model", "optim", "train", "data", "eval", "sample", "run"}; from_dict() inverts it

Precedence: the preset's defaults, then each TOML file in order, then the overrides. A TOML file has the
same sections as to_dict() (and may set `preset` at the top). Every key is checked: an unknown key or a
value of the wrong type or range raises ValueError naming the key (`train.stepz`, `model.top_k`), so a
typo never silently trains the default.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import nanowhale._C as _C

PRESETS = ("tiny", "small", "base", "nanowhale-100m")  # the scale ladder, smallest first
ADAM_GROUPS = ("embed", "head", "router", "scalar")
ADAM_FIELDS = ("lr", "beta1", "beta2", "eps", "weight_decay")
OPTIM_FIELDS = ("muon_lr", "muon_momentum", "muon_weight_decay", "ns_steps", "nesterov", "grad_clip")


@dataclass
class TrainSection:
    """The loop. Progress p in [0, 1] is step/steps, or training seconds/time_budget when time_budget > 0."""

    steps: int = 120                 # optimizer steps (ignored when time_budget > 0)
    time_budget: float = 0.0         # seconds of training (the first clock_skip_steps steps not counted)
    clock_skip_steps: int = 3        # warm-up steps excluded from the time-budget clock (as autoresearch)
    batch_tokens: int = 8192         # tokens per optimizer step = micro_batch * seq_len * accumulation
    micro_batch: int = 16            # rows per forward/backward
    warmup_frac: float = 0.0         # LR: linear warmup over the first warmup_frac of progress,
    decay_frac: float = 0.5          # ... constant, then linear decay over the last decay_frac
    final_lr_frac: float = 0.0       # ... to final_lr_frac of the peak
    wd_decay: bool = True            # weight decay multiplier 1 - p (decays to 0 with progress)
    momentum_start: float = 0.85     # Muon momentum warmed up linearly to optim.muon_momentum
    momentum_warmup_frac: float = 0.1
    balance_decay_start: float = 0.7  # balance-bias speed: full until here, linear to 0 at balance_decay_end
    balance_decay_end: float = 0.95
    seed: int = 0                    # model init and data order
    threads: int = 0                 # CPU threads; 0: all cores
    device: str = "auto"             # auto (cuda when available), cpu, cuda
    precision: str = "auto"          # matmuls: bf16 (bf16 operands, fp32 accumulation) or fp32 (the
                                     # reference); auto: bf16 on cuda, fp32 on cpu. Weights stay fp32.
    cuda_graph: str = "auto"         # replay each micro-batch and optimizer update as a CUDA graph once
                                     # shapes settle: on, off (every launch from the host); auto: on on cuda
    comm_timeout: float = 300.0      # data parallel: seconds a collective waits before naming silent ranks


@dataclass
class DataSection:
    dir: str = ""                    # prepared data (tokenizer.nwtok, train_*.bin, val_*.bin); "": default corpus
    tokenizer_train_mb: float = 20.0  # default corpus only: text used to train its tokenizer
    shard_tokens: int = 10_000_000   # default corpus only


@dataclass
class EvalSection:
    every: int = 0                   # evaluate val_bpb every N steps (0: only at the end)
    tokens: int = 65536              # fixed number of validation target tokens (rounded down to whole rows)
    batch_size: int = 16             # rows per forward; does not change val_bpb


@dataclass
class SampleSection:
    n: int = 3                       # samples printed at the end of training (0: none)
    max_new_tokens: int = 48
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: int = 0
    prompts: list = field(default_factory=list)  # empty: the first words of the first n validation documents


@dataclass
class RunSection:
    dir: str = ""                    # "": runs/<name>, name defaulting to a timestamp
    name: str = ""
    keep: int = 2                    # checkpoints kept (the newest)
    checkpoint_every: int = 0        # steps; 0: only at the end
    log_every: int = 1               # metrics lines (with per-layer expert load) every N steps
    profile_step: int = 2            # time this step's ops (op profiler) into metrics.jsonl; 0: never


# Per-preset defaults of the non-model sections (the model section comes from ModelConfig.preset).
# Learning rates found by `nanowhale research` on tiny (agent_recipes/pretrain.md, 15 experiments: Muon 0.02
# -> 0.08, embedding 0.05 -> 0.1, LM head 0.004 -> 0.016), confirmed at small by `research promote` and on
# the main job (tiny, 120 steps: val_bpb 1.855 -> 1.756); the C++ OptimizerConfig defaults stay as they were
# for the presets nobody has measured yet.
SMALL_MODEL_LRS = {"muon_lr": 0.08, "embed": {"lr": 0.1}, "head": {"lr": 0.016}}
PRESET_DEFAULTS: dict[str, dict] = {
    "tiny": {"optim": SMALL_MODEL_LRS},
    "small": {"optim": SMALL_MODEL_LRS},
    "base": {
        "train": {"batch_tokens": 32768, "micro_batch": 16},
        "eval": {"tokens": 1 << 18, "batch_size": 16},
        "data": {"tokenizer_train_mb": 50.0},
    },
    "nanowhale-100m": {
        "train": {"steps": 5000, "batch_tokens": 262144, "micro_batch": 16},
        "eval": {"every": 500, "tokens": 1 << 20, "batch_size": 16},
        "data": {"tokenizer_train_mb": 200.0, "shard_tokens": 100_000_000},
        "run": {"checkpoint_every": 500},
    },
}

SECTIONS = {"train": TrainSection, "data": DataSection, "eval": EvalSection, "sample": SampleSection,
            "run": RunSection}


@dataclass
class RunConfig:
    preset: str = "tiny"
    model: dict = field(default_factory=dict)   # every ModelConfig field
    optim: dict = field(default_factory=dict)   # OPTIM_FIELDS and {group: {ADAM_FIELDS}}
    train: TrainSection = field(default_factory=TrainSection)
    data: DataSection = field(default_factory=DataSection)
    eval: EvalSection = field(default_factory=EvalSection)
    sample: SampleSection = field(default_factory=SampleSection)
    run: RunSection = field(default_factory=RunSection)

    def model_config(self) -> _C.ModelConfig:
        return _C.ModelConfig.from_dict(dict(self.model))

    def optimizer_config(self) -> _C.OptimizerConfig:
        o = _C.OptimizerConfig()
        for k in OPTIM_FIELDS:
            setattr(o, k, self.optim[k])
        for g in ADAM_GROUPS:
            setattr(o, g, _C.AdamGroup(**self.optim[g]))
        return o

    def accumulation(self) -> int:
        return self.train.batch_tokens // (self.train.micro_batch * self.model["seq_len"])

    def to_dict(self) -> dict:
        d = {"preset": self.preset, "model": dict(self.model),
             "optim": {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.optim.items()}}
        for name in SECTIONS:
            d[name] = dataclasses.asdict(getattr(self, name))
        return d

    @staticmethod
    def from_dict(d: dict) -> "RunConfig":
        """Builds and validates a config from a full or partial dict (missing keys take the preset's defaults)."""
        preset = d.get("preset", "tiny")
        cfg = defaults(preset)
        merge(cfg, {k: v for k, v in d.items() if k != "preset"})
        validate(cfg)
        return cfg


def _short(v):
    """A float32 read from C++ as its shortest decimal (0.02, not 0.019999999552965164); other values as is."""
    return float(f"{v:.7g}") if isinstance(v, float) else v


def _optim_defaults() -> dict:
    o = _C.OptimizerConfig()
    d = {k: _short(getattr(o, k)) for k in OPTIM_FIELDS}
    for g in ADAM_GROUPS:
        grp = getattr(o, g)
        d[g] = {k: _short(getattr(grp, k)) for k in ADAM_FIELDS}
    return d


def defaults(preset: str = "tiny") -> RunConfig:
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    model = {k: (v if k == "rope_base" else _short(v)) for k, v in _C.ModelConfig.preset(preset).to_dict().items()}
    cfg = RunConfig(preset=preset, model=model, optim=_optim_defaults())
    merge(cfg, PRESET_DEFAULTS[preset])
    return cfg


def _coerce(key: str, value, default):
    """value converted to the type of `default`, or ValueError naming key."""
    def bad(what):
        return ValueError(f"{key}: expected {what}, got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("an integer")
        if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
            raise bad("an integer")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    raise bad(type(default).__name__)


def _merge_dict(prefix: str, target: dict, updates: dict) -> None:
    for k, v in updates.items():
        key = f"{prefix}.{k}"
        if k not in target:
            raise ValueError(f"{key}: unknown key (known: {', '.join(sorted(target))})")
        if isinstance(target[k], dict):
            if not isinstance(v, dict):
                raise ValueError(f"{key}: expected a table of {', '.join(target[k])}, got {v!r}")
            _merge_dict(key, target[k], v)
        else:
            target[k] = _coerce(key, v, target[k])


def merge(cfg: RunConfig, updates: dict) -> None:
    """Applies a nested dict of updates in place; unknown keys and bad types raise ValueError naming the key."""
    for section, values in updates.items():
        if section == "preset":
            if values != cfg.preset:
                raise ValueError(f"preset: '{values}' must be chosen first (the config was built from '{cfg.preset}')")
            continue
        known = ("preset", "model", "optim", *SECTIONS)
        if section not in known:
            raise ValueError(f"{section}: unknown section (known: {', '.join(known)})")
        if not isinstance(values, dict):
            raise ValueError(f"{section}: expected a table, got {values!r}")
        if section in ("model", "optim"):
            _merge_dict(section, getattr(cfg, section), values)
            continue
        obj = getattr(cfg, section)
        names = [f.name for f in dataclasses.fields(obj)]
        for k, v in values.items():
            if k not in names:
                raise ValueError(f"{section}.{k}: unknown key (known: {', '.join(names)})")
            setattr(obj, k, _coerce(f"{section}.{k}", v, getattr(obj, k)))


def _check(ok: bool, key: str, msg: str, value) -> None:
    if not ok:
        raise ValueError(f"{key}: {msg}, got {value!r}")


# Upper bounds of the non-model keys: far above any real run, low enough that every size or count computed
# from them stays an exact int64 / finite double and a typo (1e308 tokens) is an error instead of a hang.
MAX_COUNT = 10**9             # steps, intervals, checkpoints kept
MAX_TOKENS = 1 << 40          # tokens per batch, per shard, evaluated; top-k
MAX_ROWS = 1 << 20            # rows per forward, samples
MAX_NEW_TOKENS = 1 << 24      # as the C++ generate's own limit on sequence length
MAX_SECONDS = 10**8           # ~3 years
MAX_MB = 10**7                # 10 TB of tokenizer training text
MAX_THREADS = 1 << 12
MAX_SEED = (1 << 63) - 1
MAX_TEMPERATURE = 1e4


def _range(value, lo, hi, key: str, unit: str = "") -> None:
    """lo <= value <= hi (NaN and infinities fail), or ValueError naming the key and the range."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
        unit = f" {unit}" if unit else ""
        raise ValueError(f"{key}: must be in [{lo}, {hi}]{unit}, got {value!r}")


def validate(cfg: RunConfig) -> None:
    """Range checks of every section; the model and optimizer by their C++ validators."""
    try:
        cfg.model_config().validate()
    except ValueError as e:
        raise ValueError(f"model: {e}") from None
    try:
        cfg.optimizer_config().validate()
    except ValueError as e:
        raise ValueError(f"optim: {e}") from None
    t, T = cfg.train, cfg.model["seq_len"]
    _range(t.steps, 1, MAX_COUNT, "train.steps")
    _range(t.time_budget, 0, MAX_SECONDS, "train.time_budget", "seconds")
    _range(t.clock_skip_steps, 0, MAX_COUNT, "train.clock_skip_steps")
    _range(t.micro_batch, 1, MAX_ROWS, "train.micro_batch")
    _check(t.batch_tokens >= t.micro_batch * T and t.batch_tokens % (t.micro_batch * T) == 0, "train.batch_tokens",
           f"must be a positive multiple of train.micro_batch * model.seq_len = {t.micro_batch * T}", t.batch_tokens)
    _range(t.batch_tokens, 1, MAX_TOKENS, "train.batch_tokens")
    for k in ("warmup_frac", "decay_frac", "final_lr_frac", "momentum_warmup_frac", "balance_decay_start",
              "balance_decay_end"):
        v = getattr(t, k)
        _check(0.0 <= v <= 1.0, f"train.{k}", "must be in [0, 1]", v)
    _check(t.warmup_frac + t.decay_frac <= 1.0, "train.decay_frac", "warmup_frac + decay_frac must be <= 1",
           t.decay_frac)
    _check(t.balance_decay_start <= t.balance_decay_end, "train.balance_decay_end",
           "must be >= train.balance_decay_start", t.balance_decay_end)
    _check(0.0 <= t.momentum_start <= 1.0, "train.momentum_start", "must be in [0, 1]", t.momentum_start)
    _range(t.seed, 0, MAX_SEED, "train.seed")
    _range(t.threads, 0, MAX_THREADS, "train.threads")
    _check(t.device in ("auto", "cpu", "cuda"), "train.device", "must be auto, cpu or cuda", t.device)
    _check(t.precision in ("auto", "bf16", "fp32"), "train.precision", "must be auto, bf16 or fp32", t.precision)
    _check(t.cuda_graph in ("auto", "on", "off"), "train.cuda_graph", "must be auto, on or off", t.cuda_graph)
    _check(t.comm_timeout > 0, "train.comm_timeout", "must be > 0 seconds", t.comm_timeout)
    _range(t.comm_timeout, 0, MAX_SECONDS, "train.comm_timeout", "seconds")
    _check(cfg.data.tokenizer_train_mb > 0, "data.tokenizer_train_mb", "must be > 0", cfg.data.tokenizer_train_mb)
    _range(cfg.data.tokenizer_train_mb, 0, MAX_MB, "data.tokenizer_train_mb", "MB")
    _range(cfg.data.shard_tokens, 1, MAX_TOKENS, "data.shard_tokens")
    _range(cfg.eval.every, 0, MAX_COUNT, "eval.every")
    _check(cfg.eval.tokens >= T, "eval.tokens", f"must be >= model.seq_len = {T}", cfg.eval.tokens)
    _range(cfg.eval.tokens, T, MAX_TOKENS, "eval.tokens")
    _range(cfg.eval.batch_size, 1, MAX_ROWS, "eval.batch_size")
    s = cfg.sample
    _range(s.n, 0, MAX_ROWS, "sample.n")
    _range(s.max_new_tokens, 1, MAX_NEW_TOKENS, "sample.max_new_tokens")
    _range(s.temperature, 0, MAX_TEMPERATURE, "sample.temperature")
    _range(s.top_k, 0, MAX_TOKENS, "sample.top_k")
    _check(0.0 < s.top_p <= 1.0, "sample.top_p", "must be in (0, 1]", s.top_p)
    _range(s.seed, 0, MAX_SEED, "sample.seed")
    r = cfg.run
    _range(r.keep, 1, MAX_COUNT, "run.keep")
    _range(r.checkpoint_every, 0, MAX_COUNT, "run.checkpoint_every")
    _range(r.log_every, 1, MAX_COUNT, "run.log_every")
    _range(r.profile_step, 0, MAX_COUNT, "run.profile_step")


def parse_override(text: str) -> dict:
    """'a.b.c=value' -> {'a': {'b': {'c': value}}}; value in TOML syntax (16, 0.03, true, "x", [..]), else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set {text!r}: expected KEY=VALUE, e.g. model.n_experts=16")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as swiglu or cuda
    parts = key.split(".")
    if any(not p for p in parts):
        raise ValueError(f"--set {text!r}: bad key {key!r}")
    if len(parts) == 1 and parts[0] != "preset":
        raise ValueError(f"{key}: keys are SECTION.NAME (e.g. train.steps, model.d_model)")
    out: dict = {}
    node = out
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_toml(path: str | Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: invalid TOML: {e}") from None


def resolve(preset: str | None = None, files: list | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The config a `nanowhale train` command line describes (see the module docstring)."""
    layers = [load_toml(f) for f in files or []]
    layers += [parse_override(o) for o in overrides or []]
    chosen = preset
    for layer in layers:  # a `preset` in a file or override picks the base, unless --preset did
        if "preset" in layer and preset is None:
            chosen = layer["preset"]
    if chosen is not None and not isinstance(chosen, str):
        raise ValueError(f"preset: expected a string, got {chosen!r}")
    cfg = defaults(chosen or "tiny")
    for layer in layers:
        layer = {k: v for k, v in layer.items() if k != "preset"}
        merge(cfg, layer)
    validate(cfg)
    return cfg


def to_toml(d: dict) -> str:
    """A nested dict of scalars/lists of strings as TOML (enough for RunConfig.to_dict())."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v) if not isinstance(v, float) or math.isfinite(v) else ("inf" if v > 0 else "nan")
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines: list[str] = []
    def table(name, d):
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if name:
            lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {val(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{name}.{k}" if name else k, v)
    table("", d)
    return "\n".join(lines).lstrip("\n") + "\n"


__all__ = ["RunConfig", "defaults", "load_toml", "merge", "parse_override", "resolve", "to_toml", "validate"]
