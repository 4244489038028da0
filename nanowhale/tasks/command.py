"""`nanowhale eval --ckpt RUN --task hellaswag,piqa [--limit N] [--shots K]`: the task suite on a checkpoint, and
val_bpb on the run's validation shards when they are here, printed and merged into RUN/eval_tasks.json."""

from __future__ import annotations

from pathlib import Path


# `nanowhale eval --harness` results (nanowhale/lm_eval/command.py), beside eval_tasks.json; read by the report
HARNESS_RESULTS_FILE = "eval_harness.json"


def run_dir_of(checkpoint_dir: Path) -> Path:
    """RUN for RUN/checkpoints/step_N; the directory itself for a loose checkpoint."""
    return checkpoint_dir.parent.parent if checkpoint_dir.parent.name == "checkpoints" else checkpoint_dir


def eval_tasks(ckpt: str, tasks: str, limit: int | None = None, shots: int = 0, device: str = "auto",
               batch_rows: int = 16, out=print) -> dict:
    from nanowhale.loaded import load
    from nanowhale.tasks import ModelScorer, format_results, make_tasks, run_tasks, save_results
    from nanowhale.tasks.runner import RESULTS_FILE

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if shots < 0:
        raise ValueError(f"--shots must be >= 0, got {shots}")
    task_list = make_tasks(tasks)  # unknown names fail before the model loads
    run = load(ckpt, device=device)
    chat = "posttrain" in run.checkpoint.meta  # SFT/DPO/RL checkpoints answer generative tasks as a chat turn
    scorer = ModelScorer(run.model, run.tokenizer, batch_rows=batch_rows, chat=chat)
    run_dir = run_dir_of(run.checkpoint.dir)

    def done(name: str, result: dict) -> None:  # saved task by task: a later failure keeps what was measured
        out(format_results({"tasks": {name: result}}))
        save_results(run_dir, str(run.checkpoint.dir), run.step, {"tasks": {name: result}})

    try:  # val_bpb beside the tasks, so a lineage report has it for post-trained runs too
        bpb = run.val_bpb()["val_bpb"]
        save_results(run_dir, str(run.checkpoint.dir), run.step, {"val_bpb": bpb})
        out(f"val_bpb: {bpb:.4f}")
    except ValueError as e:
        out(f"val_bpb: not measured ({e})")
    results = run_tasks(scorer, task_list, limit, shots, log=done)
    if len(task_list) > 1:
        out(f"aggregate (chance-centred): {results['aggregate']:.4f}")
    out(f"results: {run_dir / RESULTS_FILE}")
    return results


__all__ = ["HARNESS_RESULTS_FILE", "eval_tasks", "run_dir_of"]
