"""`nanowhale sft`, `nanowhale dpo`, `nanowhale rl`: one flag per stage setting (the dataclass fields of each
stage's settings, `--lr-scale`, `--steps`, ...), plus --ckpt / --resume / --run-dir."""

from __future__ import annotations

import argparse
import dataclasses
import importlib

from nanowhale.posttrain import settings as settings_mod

STAGES = {  # command: (module, settings class, runner, help)
    "sft": ("nanowhale.posttrain.sft", "SFTSettings", "sft", "supervised fine-tuning on conversations"),
    "dpo": ("nanowhale.posttrain.dpo", "DPOSettings", "dpo", "direct preference optimisation on chosen/rejected pairs"),
    "rl": ("nanowhale.posttrain.rl", "RLSettings", "rl", "policy gradient with verifiable rewards (GRPO-style)"),
}
DESCRIPTIONS = {  # the stage modules' docstrings import NumPy and the extension: summarised here instead
    "sft": "Supervised fine-tuning of a checkpoint on conversations, packed whole into rows; the loss is the "
           "masked mean over assistant tokens. See README, Post-training.",
    "dpo": "Direct Preference Optimization on chosen/rejected pairs against reference log-probs computed once "
           "from the starting model. See README, Post-training.",
    "rl": "On-policy policy gradient with verifiable rewards (GRPO-style groups, group-mean baseline, optional "
          "k3 KL to the starting model). See README, Post-training.",
}


def _run(args: argparse.Namespace) -> int:
    module, cls_name, fn_name, _ = STAGES[args.command]
    mod = importlib.import_module(module)
    cls = getattr(settings_mod, cls_name)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name) is not None}
    if args.resume and given:
        raise ValueError(f"--resume continues a {args.command} run with its saved settings; "
                         f"drop {', '.join('--' + k.replace('_', '-') for k in given)}")
    settings = cls(**given)
    result = getattr(mod, fn_name)(settings, ckpt=args.ckpt, resume=args.resume, run_dir=args.run_dir)
    for i, s in enumerate(result.pop("samples", None) or []):
        print(f"--- sample {i}\n{s}")
    result.pop("samples_start", None)
    print("---")
    for k, v in result.items():
        print(f"{k}: {v:.6f}" if isinstance(v, float) else f"{k}: {v}")
    return 0 if result.get("status") == "done" else 1


def _add_stage(sub: argparse._SubParsersAction, command: str) -> None:
    _, cls_name, _, help_text = STAGES[command]
    cls = getattr(settings_mod, cls_name)
    p = sub.add_parser(command, help=help_text, description=DESCRIPTIONS[command])
    p.add_argument("--ckpt", help="the parent checkpoint (a run directory: its latest)")
    p.add_argument("--resume", metavar="RUN", help=f"continue this {command} run from its latest checkpoint")
    p.add_argument("--run-dir", help=f"run directory (default: runs/{command}-TIMESTAMP)")
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, list):
            p.add_argument(flag, nargs="+", dest=f.name, help=f"(list) default {default}")
        elif isinstance(default, bool):
            p.add_argument(flag, dest=f.name, type=lambda x: x.lower() in ("1", "true", "yes"),
                           help=f"default {default}")
        else:
            p.add_argument(flag, dest=f.name, type=type(default), help=f"default {default}")
    p.set_defaults(func=_run)


def add_posttrain_commands(sub: argparse._SubParsersAction) -> None:
    for command in STAGES:
        _add_stage(sub, command)


__all__ = ["add_posttrain_commands"]
