"""`python -m nanowhale.lm_eval ARGS`: lm-eval's own command line (`lm_eval ARGS`, unchanged) with the
`nanowhale` model registered and the built-in sets' offline tasks on its --include_path.

From a source tree nothing is installed, so this module registers ours before lm-eval runs; an installed
nanowhale also answers plain `lm_eval --model nanowhale` (nanowhale_lm_eval_hook.py), given
--include_path "$(python -m nanowhale.lm_eval --task-dir)" for the built-in sets.
"""

import sys


def main(argv: list[str]) -> None:
    import nanowhale.lm_eval  # noqa: F401  (registers the model)
    from nanowhale.lm_eval.task_dir import task_dir

    if argv == ["--task-dir"]:
        print(task_dir())
        return
    from lm_eval.__main__ import cli_evaluate

    args = list(argv)
    if any(a in ("--tasks", "-t") for a in args) and "--include_path" not in args:
        args += ["--include_path", str(task_dir())]
    sys.argv = ["lm_eval"] + args
    cli_evaluate()


if __name__ == "__main__":
    main(sys.argv[1:])
