"""Text in, text out around the engine's generation (C++ KV cache: Model.generate / new_kv_cache / decode).

    texts = sample(model, tokenizer, ["def "], n=2, max_new_tokens=40, temperature=0.8, top_k=50, seed=0)

Prompts are prefixed with <|bos|> (every training document starts with it). The engine needs rows of equal
length, so each prompt is generated in its own call with n rows; generation stops at the first <|bos|>
(the start of a next document), which is cut from the text.
"""

from __future__ import annotations

import numpy as np


def encode_prompt(tokenizer, prompt: str) -> np.ndarray:
    return np.asarray([tokenizer.special_id("<|bos|>")] + tokenizer.encode(prompt), dtype=np.int32)


def generate_ids(model, prompt_ids: np.ndarray, n: int, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_token: int | None = None) -> np.ndarray:
    """(n, Tp + new) int32 ids of n continuations of one prompt; new tokens capped by the model's seq_len."""
    T = model.config.seq_len
    if len(prompt_ids) >= T:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the model's seq_len is {T}")
    new = min(max_new_tokens, T - len(prompt_ids))
    prompt = np.tile(np.asarray(prompt_ids, dtype=np.int32)[None, :], (n, 1))
    return model.generate(prompt, new, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                          stop_token=stop_token)


def sample(model, tokenizer, prompts: list[str], n: int = 1, max_new_tokens: int = 64, temperature: float = 0.8,
           top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> list[str]:
    """n completions (prompt + continuation, as text) for each prompt, prompt-major."""
    bos = tokenizer.special_id("<|bos|>")
    out = []
    for i, prompt in enumerate(prompts):
        ids = encode_prompt(tokenizer, prompt)
        rows = generate_ids(model, ids, n, max_new_tokens, temperature, top_k, top_p, seed + i, stop_token=bos)
        for row in rows:
            row = row[1:]  # the leading <|bos|>
            cut = np.flatnonzero(row[len(ids) - 1:] == bos)
            if cut.size:
                row = row[: len(ids) - 1 + cut[0]]
            out.append(tokenizer.decode(row.tolist()))
    return out


__all__ = ["encode_prompt", "generate_ids", "sample"]
