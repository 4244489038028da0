"""`nanowhale chat --ckpt RUN`: a terminal chat that streams the answer as it is generated.

    nanowhale chat --ckpt runs/sft1 --temperature 0.7 --top-k 50
    nanowhale chat --ckpt runs/sft1 -p "What is 2 + 2?"         # one shot: prints the answer, exits

The conversation is kept and sent whole each turn (rendered by the conversation renderer); when it no longer
fits the model's context the oldest turns are dropped. Commands: /reset (forget the conversation),
/quit (or Ctrl-D).
"""

from __future__ import annotations

import sys

from nanowhale.serve.engine import Engine, RequestError, Sampling


def _answer(engine: Engine, history: list[dict], s: Sampling, out) -> str:
    """Streams one assistant turn to `out`; drops the oldest exchanges while the prompt does not fit."""
    while True:
        try:
            stream = engine.chat(history, s)
            break
        except RequestError as e:
            if e.code != "context_length_exceeded" or len(history) < 3:
                raise
            del history[:2]  # the oldest user/assistant exchange
    text = []
    for delta in stream:
        out.write(delta.text)
        out.flush()
        text.append(delta.text)
    out.write("\n")
    return "".join(text)


def chat(ckpt: str, prompt: str | None = None, temperature: float = 0.8, top_k: int = 50, top_p: float = 1.0,
         max_tokens: int = 256, seed: int = 0, system: str | None = None, device: str = "auto",
         stdin=None, out=None) -> int:
    from nanowhale.loaded import load

    stdin, out = stdin or sys.stdin, out or sys.stdout
    engine = Engine(load(ckpt, device=device))
    s = Sampling(max_tokens=min(max_tokens, engine.max_tokens_cap), temperature=temperature, top_k=top_k,
                 top_p=top_p, seed=seed)
    base = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        _answer(engine, base + [{"role": "user", "content": prompt}], s, out)
        return 0
    out.write(f"nanowhale chat · {engine.run.checkpoint.dir} · /reset to start over, /quit or Ctrl-D to leave\n")
    history = list(base)
    turn = 0
    while True:
        out.write("you> ")
        out.flush()
        line = stdin.readline()
        if not line:  # Ctrl-D
            out.write("\n")
            return 0
        line = line.rstrip("\n")
        if line.strip() in ("/quit", "/exit"):
            return 0
        if line.strip() == "/reset":
            history = list(base)
            out.write("(conversation reset)\n")
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        out.write("whale> ")
        s.seed = seed + turn  # a different draw each turn, the same session for the same seed
        turn += 1
        try:
            history.append({"role": "assistant", "content": _answer(engine, history, s, out)})
        except RequestError as e:
            history.pop()
            out.write(f"\n(error: {e})\n")


__all__ = ["chat"]
