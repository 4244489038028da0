"""The `nanowhale` command line. Subcommand groups register themselves in build_parser()."""

from __future__ import annotations

import argparse
import sys


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, except where there is none to show or the help says it already."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """The command's parser; subcommands inherit its class, hence the help formatter."""

    def __init__(self, *args, formatter_class=_Help, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def _data_prepare(args: argparse.Namespace) -> int:
    from nanowhale.data.prepare import prepare

    state = prepare(
        inputs=args.inputs,
        out_dir=args.out,
        urls=args.url,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        tokenizer_train_bytes=int(args.tokenizer_train_mb * 1e6),
        shard_tokens=args.shard_tokens,
        val_every=args.val_every,
        num_threads=args.threads,
        max_docs=args.max_docs,
        val_sources=args.val,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print(f"{args.out}: train {state['tokens']['train']:,} tokens in {state['shards']['train']} shards, "
          f"val {state['tokens']['val']:,} tokens in {state['shards']['val']} shards")
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    import nanowhale as nw

    cfg = nw.ModelConfig.preset(args.preset)
    print(json.dumps(cfg.to_dict(), indent=2))
    print(f"params_total: {cfg.num_params()}")
    print(f"params_active: {cfg.num_active_params()}")
    print(f"flops_per_token: {cfg.flops_per_token():.4g}")
    print(f"cuda_available: {nw.cuda_available()}")
    print(f"threads: {nw.get_num_threads()}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="a preset's configuration, parameter counts and the build")
    p.add_argument("--preset", default="tiny", help="tiny, small, base or nanowhale-100m (the scale ladder)")
    p.set_defaults(func=_info)


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="tokenizer and token shards")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser(
        "prepare",
        help="turn documents into a tokenizer and train/val shards (resumable)",
        description="Reads text files/directories, JSONL(.gz) with a 'text' field, or parquet; with no input, "
        "the offline default corpus (the Python standard library). Re-running with the same arguments resumes.",
    )
    p.add_argument("inputs", nargs="*", help="files or directories, or 'stdlib' (default when nothing is given)")
    p.add_argument("--out", default="data", help="output directory (default: data)")
    p.add_argument("--url", action="append", help="download a parquet/JSONL file first; append #sha256=HEX to check it")
    p.add_argument("--tokenizer", help="reuse this tokenizer file instead of training one")
    p.add_argument("--vocab-size", type=int, default=32768,
                   help="BPE vocabulary; match the model's model.vocab_size (tiny preset: 8192)")
    p.add_argument("--tokenizer-train-mb", type=float, default=200, help="text used to train the tokenizer")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (about)")
    p.add_argument("--val", nargs="+", metavar="SOURCE",
                   help="the validation split's own documents (files, directories, JSONL); the inputs then all "
                   "go to train")
    p.add_argument("--val-every", type=int, default=100, help="without --val: every N-th document goes to val")
    p.add_argument("--threads", type=int, default=0, help="0: all cores")
    p.add_argument("--max-docs", type=int, help="stop after this many documents")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_data_prepare)


def _train(args: argparse.Namespace) -> int:
    from nanowhale.config import resolve
    from nanowhale.trainer import format_summary, train

    sets = list(args.set or [])
    for flag, key in (("time_budget", "train.time_budget"), ("steps", "train.steps"), ("name", "run.name"),
                      ("run_dir", "run.dir"), ("data", "data.dir"), ("device", "train.device"),
                      ("seed", "train.seed"), ("threads", "train.threads")):
        v = getattr(args, flag)
        if v is not None:
            sets.append(f"{key}={v!r}" if isinstance(v, str) else f"{key}={v}")
    progress = False if args.no_progress else None
    if args.resume:
        if args.preset or args.config:
            raise ValueError("--resume continues a run with its saved config; give only --set overrides")
        result = train(resume=args.resume, overrides=sets, progress=progress)
    else:
        cfg = resolve(args.preset, args.config, sets)
        result = train(cfg, progress=progress)
    if result["rank"] == 0:  # in a multi-process job, rank 0 speaks for all
        for i, text in enumerate(result.get("samples") or []):
            print(f"--- sample {i}\n{text}")
        print(format_summary(result))
    return 0 if result["status"] == "done" else 1


def _eval(args: argparse.Namespace) -> int:
    from nanowhale.loaded import load

    if args.harness_include and not args.harness:
        raise ValueError("--harness-include goes with --harness TASKS")
    if args.harness:
        if args.task:
            raise ValueError("give either --task or --harness, not both")
        try:
            from nanowhale.lm_eval.command import eval_harness
        except ImportError as e:
            raise ValueError(f"--harness needs lm-evaluation-harness ({e}): pip install 'nanowhale[eval]'") from None

        eval_harness(args.ckpt, args.harness, include=args.harness_include, limit=args.limit, shots=args.shots,
                     device=args.device, batch_rows=args.batch_size or 16)
        return 0
    if args.task:
        from nanowhale.tasks.command import eval_tasks

        eval_tasks(args.ckpt, args.task, limit=args.limit, shots=args.shots, device=args.device)
        return 0
    shards = [p for p in args.inputs if p.endswith(".bin")]
    texts = [p for p in args.inputs if not p.endswith(".bin")]
    if shards and texts:
        raise ValueError("give either token shards (.bin) or text files, not both")
    run = load(args.ckpt, device=args.device)
    if texts:  # each file whole, one line each, then the total over all of them
        r = run.score_files(texts, batch_size=args.batch_size)
        width = max(len(f["file"]) for f in r["files"])
        for f in r["files"]:
            print(f"{f['file']:<{width}}  bpb {f['bpb']:.6f}  loss {f['loss']:.6f}  tokens {f['tokens']}  "
                  f"bytes {f['bytes']}")
        for k in ("bpb", "loss", "tokens", "bytes"):
            v = r["total"][k]
            print(f"total_{k}: {v:.6f}" if isinstance(v, float) else f"total_{k}: {v}")
        return 0
    ev = run.val_bpb(shards or None, tokens=args.tokens, batch_size=args.batch_size)
    name = "shards" if shards else "val"  # given shards, or the run's own validation split
    print(f"{name}_bpb: {ev['val_bpb']:.6f}")
    print(f"{name}_loss: {ev['val_loss']:.6f}")
    print(f"{name}_tokens: {ev['tokens']}")
    print(f"{name}_bytes: {ev['bytes']}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from nanowhale.loaded import load

    run = load(args.ckpt, device=args.device)
    texts = run.sample(args.prompt or [""], n=args.n, max_new_tokens=args.max_new_tokens,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    for i, text in enumerate(texts):
        print(f"--- sample {i}\n{text}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nanowhale.analysis.runs import load_runs, newest_run

    try:
        from nanowhale.plots import run_figures
    except ImportError as e:
        raise ValueError(f"nanowhale plot needs matplotlib ({e}); pip install 'nanowhale[plot]'") from None
    runs = load_runs(args.runs or [newest_run()])  # newest_run names where it looked when there is none
    out = Path(args.out) if args.out else (runs[0].dir / "plots" if len(runs) == 1 else Path("plots"))
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in run_figures(runs).items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=args.dpi)
        print(path)
    return 0


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="PNG figures of runs: loss, val_bpb, throughput, schedules, op profile, "
                       "expert load and balance (the figures of notebooks/runs.ipynb and routing.ipynb)")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run directories (default: the newest under ./runs)")
    p.add_argument("--out", help="output directory (default: RUN/plots for one run, ./plots for several)")
    p.add_argument("--dpi", type=int, default=100)
    p.set_defaults(func=_plot)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (default: the tiny preset on the offline default corpus, on CPU in minutes)",
        description="Resolves the config (preset, then --config TOML files, then --set overrides), prepares the "
        "default corpus if no data.dir is given, trains, evaluates val_bpb, checkpoints, prints samples and a "
        "summary block of `key: value` lines. Keys: SECTION.NAME in model, optim, train, data, eval, sample, run "
        "(see nanowhale/config.py).")
    p.add_argument("--preset", help="tiny (default), small, base or nanowhale-100m")
    p.add_argument("--config", action="append", help="a TOML config file (repeatable; later files win)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one key, e.g. --set model.n_experts=16 --set optim.muon_lr=0.03")
    p.add_argument("--time-budget", type=float,
                   help="train for this many seconds, schedules keyed on time (train.time_budget; default: off)")
    p.add_argument("--steps", type=int, help="optimizer steps (train.steps; default: the preset's, tiny: 120)")
    p.add_argument("--data", help="a prepared data directory (data.dir); default: the offline default corpus")
    p.add_argument("--name", help="run name: the run goes to runs/NAME (run.name)")
    p.add_argument("--run-dir", help="run directory (run.dir)")
    p.add_argument("--device", help="auto, cpu or cuda (train.device)")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--threads", type=int, help="CPU threads (train.threads; default: all cores)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="a plain progress line every ~10%% instead of a bar")
    p.set_defaults(func=_train)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="bits per byte of a checkpoint on its val split, token shards or text files, "
                       "or --task benchmarks",
                       description="No inputs: val_bpb on the run's validation shards over eval.tokens (as "
                       "training measured it). Shards (.bin): shards_bpb over all their tokens (or --tokens). "
                       "Text files: each scored whole, one line per file, then the total. --task: benchmark accuracy.")
    p.add_argument("--ckpt", required=True, help="a checkpoint directory or a run directory (its latest)")
    p.add_argument("inputs", nargs="*", help="token shards (.bin) or text files; default: the run's val shards")
    p.add_argument("--tokens", type=int, help="tokens of shards to score (default: the run's eval.tokens for its "
                   "val split, all tokens of given shards)")
    p.add_argument("--batch-size", type=int, help="rows per forward (does not change the result)")
    p.add_argument("--task", help="benchmarks instead of val_bpb: hellaswag,arc-easy,arc-challenge,mmlu,piqa,gsm8k "
                   "(or all), or FILE.jsonl[?kind=..&FIELD=NAME..]: multiple choice, partial scoring, single "
                   "continuation or rolling documents (nanowhale/tasks/jsonl.py)")
    p.add_argument("--harness", metavar="TASKS", help="lm-evaluation-harness tasks through the nanowhale harness "
                   "model (pip install 'nanowhale[eval]'): the built-in names run offline, others are the "
                   "harness's; results in RUN/eval_harness.json")
    p.add_argument("--harness-include", metavar="DIR", help="--harness: a folder of task YAMLs to add")
    p.add_argument("--limit", type=int, help="--task, --harness: the first N items of each task")
    p.add_argument("--shots", type=int, default=0, help="--task, --harness: solved examples before each item")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_eval)


def _add_sampling_flags(p: argparse.ArgumentParser, top_k: int) -> None:
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int, default=top_k, help="0: off")
    p.add_argument("--top-p", type=float, default=1.0, help="1: off")
    p.add_argument("--seed", type=int, default=0)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate text from a checkpoint (C++ KV cache)")
    p.add_argument("--ckpt", required=True, help="a checkpoint directory or a run directory (its latest)")
    p.add_argument("--prompt", action="append", help="prompt text (repeatable); default: empty")
    p.add_argument("-n", type=int, default=1, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    _add_sampling_flags(p, top_k=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_sample)


def _report(args: argparse.Namespace) -> int:
    from nanowhale.report import report

    print(report(args.runs))
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="a markdown table across a lineage: val_bpb, tasks, reward",
                       description="With one run, follows its post-training parents back to the base; with several, "
                       "one row each in the order given.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run (or checkpoint) directories")
    p.set_defaults(func=_report)


def _chat(args: argparse.Namespace) -> int:
    from nanowhale.chat import chat

    return chat(args.ckpt, prompt=args.prompt, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                max_tokens=args.max_tokens, seed=args.seed, system=args.system, device=args.device)


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a (post-trained) checkpoint in the terminal, streaming")
    p.add_argument("--ckpt", required=True, help="a checkpoint directory or a run directory (its latest)")
    p.add_argument("-p", "--prompt", help="one message: print the answer and exit")
    p.add_argument("--system", help="a system message")
    _add_sampling_flags(p, top_k=50)
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens per answer")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_chat)


def _serve(args: argparse.Namespace) -> int:
    from nanowhale.serve import serve

    serve(args.ckpt, host=args.host, port=args.port, api_key=args.api_key, max_tokens=args.max_tokens,
          max_prompt_tokens=args.max_prompt_tokens, slots=args.slots, queue_size=args.queue, model_name=args.model_name,
          temperature=args.temperature, device=args.device)
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server with a web chat page at /",
                       description="Endpoints: /v1/chat/completions, /v1/completions (streaming with server-sent "
                       "events), /v1/models; the chat page at /.")
    p.add_argument("--ckpt", required=True, help="a checkpoint directory or a run directory (its latest)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 (or set NANOWHALE_API_KEY)")
    p.add_argument("--model-name", help="the model id clients use (default: nanowhale-RUNNAME)")
    p.add_argument("--max-tokens", type=int, help="most tokens one request may generate (default: seq_len)")
    p.add_argument("--max-prompt-tokens", type=int, help="longest prompt accepted (default: seq_len - 1)")
    p.add_argument("--slots", type=int, default=8,
                   help="generations batched at once (a KV-cache row each); more wait in the queue")
    p.add_argument("--queue", type=int, default=64,
                   help="requests that may wait for a slot; beyond them HTTP 429 with Retry-After")
    p.add_argument("--temperature", type=float, default=0.8, help="when a request gives none")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_serve)


def _speedrun(args: argparse.Namespace) -> int:
    from nanowhale.speedrun import make_plan, speedrun

    plan = make_plan(args.scale, budget=args.budget, data=args.data, sft_data=args.sft_data, dpo_data=args.dpo_data,
                     source=getattr(args, "from"), run_dir=args.run_dir, sets=args.set)
    if args.dry_run:
        print(plan.describe())
        return 0
    speedrun(plan, figures=not args.no_figures)
    return 0


def _add_speedrun(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "speedrun", help="one command from data to a chat model and its report card (data, pretrain, sft, [dpo], "
        "rl, eval, report)",
        description="Prints the plan (each stage's share of the budget, its data and settings; the table per scale "
        "is nanowhale/speedrun/budgets.toml), then runs data -> tokenizer -> pretraining -> SFT -> DPO (with "
        "--dpo-data) -> RL on a verifiable task -> evaluation on the built-in tasks -> RUN/report.md. Every stage "
        "is a run directory under RUN with its parent recorded; rerunning the same command after an interruption "
        "continues where it stopped (finished stages are not redone).")
    p.add_argument("--scale", default="tiny", help="tiny, small, base or nanowhale-100m (a preset of the ladder)")
    p.add_argument("--budget", help="wall time of the training stages, e.g. 10m, 4h, 900 (default: the scale's, "
                   "from budgets.toml)")
    p.add_argument("--data", help="a prepared data directory, or documents to prepare (files/directories, JSONL, "
                   "parquet); default: the offline default corpus")
    p.add_argument("--sft-data", nargs="+", metavar="SPEC",
                   help="SFT conversations: files or task:NAME[:SIZE][@N] (default: the synthetic tasks)")
    p.add_argument("--dpo-data", nargs="+", metavar="FILE", help="preference pairs; DPO runs only when given")
    p.add_argument("--from", metavar="research/TAG",
                   help="take the model/optim/train settings the research branch's best commit kept")
    p.add_argument("--run-dir", help="where the stages go (default: runs/speedrun-SCALE)")
    p.add_argument("--set", action="append", metavar="STAGE.KEY=VALUE",
                   help="change one setting of a stage: pretrain.<train config key> (pretrain.model.d_model=64), "
                   "sft.steps=20, rl.task=copy, eval.limit=50, eval.tasks=arc-easy,piqa")
    p.add_argument("--dry-run", action="store_true", help="print the plan only")
    p.add_argument("--no-figures", action="store_true", help="a report without figures (drawing them takes seconds)")
    p.set_defaults(func=_speedrun)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nanowhale", description="Train small Mixture-of-Experts language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_info(sub)
    _add_data(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_sample(sub)
    _add_report(sub)
    _add_plot(sub)
    _add_chat(sub)
    _add_serve(sub)
    _add_speedrun(sub)
    from nanowhale.research.cli import add_research

    add_research(sub)
    from nanowhale.posttrain.cli import add_posttrain_commands

    add_posttrain_commands(sub)  # sft, dpo, rl
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"nanowhale: error: {e}", file=sys.stderr)
        if "nanowhale.distributed" in sys.modules:  # other processes of the job would wait for this one
            sys.modules["nanowhale.distributed"].abort_job("stopping the job after the error above", 2)
        return 2
    except FloatingPointError as e:  # a post-training stage diverged
        print(f"nanowhale: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
