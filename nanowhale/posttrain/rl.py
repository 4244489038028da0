"""`nanowhale rl`: on-policy policy gradient with verifiable rewards (GRPO-style).

Each step takes `prompts` problems of a task (tasks.py); for each, the engine samples a group of `group`
completions in one batched KV-cache generation (C++), and the task's verifier scores each 0 or 1.
Advantage = reward − the group's mean (no std scaling); groups whose rewards are all equal carry no signal and
are left out of the backward. The loss is token-level normalised: every completion token t of sample i gets
weight A_i / N (N = completion tokens of the step), so the weighted cross-entropy's gradient is
−(1/N)·Σ A_i ∇log π(token). With `kl` > 0 the k3 estimator of KL(π‖π_start), exp(d) − d − 1 with
d = log π_start − log π, is added per token (its gradient weight: kl·(π_start/π − 1)/N); this needs the
starting model, loaded once, frozen.
Logged per step: reward mean, pass@k (a group has a success), the fraction of groups with zero reward
variance, truncated samples (no <|assistant_end|> within max_new_tokens), mean completion length, KL,
and the seconds spent sampling vs in the backward. Held-out problems (the task's val split) are scored
greedily at the start, every eval_every steps and at the end.
"""

from __future__ import annotations

import time

import numpy as np

import nanowhale._C as _C
from nanowhale.checkpoint import open_checkpoint
from nanowhale.conversation import render_for_completion
from nanowhale.posttrain.batch import inputs_targets, pad_rows, weighted_backward
from nanowhale.posttrain.sampling import complete
from nanowhale.posttrain.settings import RLSettings
from nanowhale.posttrain.stage import Stage
from nanowhale.posttrain.tasks import Task, make_task


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def fits(tok, task: Task, i: int, seq_len: int, room: int = 8) -> bool:
    return len(render_for_completion(tok, task.problem(i)[0])) + room <= seq_len


def evaluate_task(model, tok, task: Task, n: int, max_new_tokens: int) -> dict:
    """Greedy pass@1 (mean reward) on the first n problems of `task` that fit, and a few samples."""
    T = model.config.seq_len
    rewards, samples = [], []
    for i in range(min(len(task), 4 * n)):
        if len(rewards) == n:
            break
        if not fits(tok, task, i, T):
            continue
        messages, gold = task.problem(i)
        c = complete(model, tok, render_for_completion(tok, messages), 1, max_new_tokens, temperature=0.0)
        r = task.reward(c.texts[0], gold)
        rewards.append(r)
        if len(samples) < 3:
            samples.append({"prompt": messages[-1]["content"], "reply": c.texts[0], "gold": gold, "reward": r})
    return {"reward": float(np.mean(rewards)) if rewards else float("nan"), "problems": len(rewards),
            "samples": samples}


def rl(settings: RLSettings | None = None, *, ckpt=None, resume=None, run_dir=None, log=print) -> dict:
    t0 = time.perf_counter()
    stage = Stage("rl", settings or RLSettings(), parent=ckpt, resume=resume, run_dir=run_dir, log=log)
    s, model, tok = stage.settings, stage.model, stage.tok
    T = stage.cfg.model["seq_len"]
    task, val_task = make_task(s.task, s.seed, "train"), make_task(s.task, s.seed, "val")
    ref = None
    if s.kl > 0:  # the frozen starting model, for the KL term
        ref = _C.Model(stage.cfg.model_config(), seed=0, device=stage.device)
        ref.precision = stage.model.precision
        open_checkpoint(stage.parent_info["checkpoint"]).load_model(ref)
    pad = tok.special_id("<|bos|>")
    log(f"rl: task {s.task}, {s.steps} steps of {s.prompts} problems x {s.group} samples")

    def evaluate() -> dict:
        ev = evaluate_task(model, tok, val_task, s.eval_problems, s.max_new_tokens)
        rec = {"event": "eval", "step": stage.step, "val_reward": ev["reward"], "val_problems": ev["problems"]}
        if s.n_samples:
            rec["samples"] = ev["samples"][:s.n_samples]
        stage.emit(rec)
        return rec

    first = evaluate() if not stage.resumed else {}
    pos = stage.state.get("problems_done", 0)
    curve = []
    while stage.step < s.steps:
        ts = time.perf_counter()
        seqs, masks, adv, rewards, lengths, truncated = [], [], [], [], [], []
        zero_var = 0
        for j in range(s.prompts):
            for _ in range(len(task)):
                if fits(tok, task, pos, T):
                    break
                pos += 1
            else:
                raise ValueError(f"rl: no problem of task {s.task} fits seq_len {T} with room for an answer")
            messages, gold = task.problem(pos)
            prompt = render_for_completion(tok, messages)
            c = complete(model, tok, prompt, s.group, s.max_new_tokens, s.temperature, s.top_k,
                         seed=_seed(s.seed, stage.step, j))
            pos += 1
            r = np.array([task.reward(text, gold) for text in c.texts])
            rewards.append(r)
            lengths += [len(x) for x in c.tokens]
            truncated.append(c.truncated)
            if r.std() == 0:
                zero_var += 1
                continue
            for x, a in zip(c.tokens, r - r.mean()):
                seqs.append(np.concatenate([prompt, x]))
                masks.append(np.concatenate([np.zeros(len(prompt), np.uint8), np.ones(len(x), np.uint8)]))
                adv.append(a)
        t_sample = time.perf_counter() - ts
        rewards = np.stack(rewards)
        n_tokens = int(sum(lengths))
        kl = 0.0
        bal = 0.0
        if seqs:
            rows, mask = pad_rows(seqs, masks, max(len(x) for x in seqs), pad)
            weights = np.asarray(adv)[:, None] / n_tokens * np.ones((len(rows), rows.shape[1] - 1))
            if ref is not None:
                inp, tgt, learned = inputs_targets(rows, mask)
                d = model.token_losses(inp, tgt).astype(np.float64) - ref.token_losses(inp, tgt)  # log π_ref − log π
                weights += s.kl * (np.exp(d) - 1.0) / n_tokens
                kl = float(((np.exp(d) - d - 1.0) * learned).sum() / max(learned.sum(), 1))
            _, bal = weighted_backward(model, rows, mask, weights, s.micro_batch)
        info = stage.optimizer_step(skip=not seqs)  # every group had equal rewards: no signal this step
        stage.check_finite(grad_norm=info["grad_norm"])
        stage.state = {"problems_done": pos}
        rec = {"reward_mean": float(rewards.mean()),
               "pass_at_k": float((rewards.max(axis=1) > 0).mean()), "k": s.group,
               "zero_variance_frac": zero_var / s.prompts, "truncated_frac": float(np.concatenate(truncated).mean()),
               "mean_length": n_tokens / rewards.size, "kl": kl, "balance_loss": bal, **info,
               "sample_seconds": t_sample, "step_seconds": time.perf_counter() - ts}
        curve.append(rec["reward_mean"])
        stage.after_step(rec, evaluate)
    fifth = max(1, len(curve) // 5)
    return stage.finish(evaluate, first, t0, lambda first, last: {
        "val_reward_start": first.get("val_reward"), "val_reward": last.get("val_reward"),
        "train_reward_first_steps": float(np.mean(curve[:fifth])) if curve else None,
        "train_reward_last_steps": float(np.mean(curve[-fifth:])) if curve else None})


__all__ = ["RLSettings", "evaluate_task", "rl"]
