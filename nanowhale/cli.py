"""The `nanowhale` command."""

import argparse
import json

import nanowhale as nw


def cmd_info(args):
    cfg = nw.ModelConfig.preset(args.preset)
    print(json.dumps(cfg.to_dict(), indent=2))
    print(f"params_total: {cfg.num_params()}")
    print(f"params_active: {cfg.num_active_params()}")
    print(f"flops_per_token: {cfg.flops_per_token():.4g}")
    print(f"cuda_available: {nw.cuda_available()}")
    print(f"threads: {nw.get_num_threads()}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nanowhale", description="Train small Mixture-of-Experts language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show a preset's configuration, parameter counts and the build")
    info.add_argument("--preset", default="tiny", help="tiny or nanowhale-100m")
    info.set_defaults(func=cmd_info)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as e:
        parser.exit(2, f"nanowhale: error: {e}\n")


if __name__ == "__main__":
    main()
