"""The `nanowhale` command line. Subcommand groups register themselves in build_parser()."""

from __future__ import annotations

import argparse
import sys


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
    p.add_argument("--preset", default="tiny", help="tiny or nanowhale-100m")
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
    p.add_argument("--vocab-size", type=int, default=32768)
    p.add_argument("--tokenizer-train-mb", type=float, default=200, help="text used to train the tokenizer")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (about)")
    p.add_argument("--val-every", type=int, default=100, help="every N-th document goes to the val split")
    p.add_argument("--threads", type=int, default=0, help="0: all cores")
    p.add_argument("--max-docs", type=int, help="stop after this many documents")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_data_prepare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanowhale", description="Train small Mixture-of-Experts language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_info(sub)
    _add_data(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"nanowhale: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
