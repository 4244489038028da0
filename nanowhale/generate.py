"""Text in, text out around the engine's generation (C++ KV cache: Model.generate / start_generation).

    texts = sample(model, tokenizer, ["def "], n=2, max_new_tokens=40, temperature=0.8, top_k=50, seed=0)
    for delta in stream_text(model, tokenizer, prompt_ids, max_new_tokens=64, stop=["\n\n"]): print(delta.text)

Prompts are prefixed with <|bos|> (every training document starts with it). The engine needs rows of equal
length, so each prompt is generated in its own call with n rows; generation stops at the first <|bos|>
(the start of a next document), which is cut from the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from nanowhale import _C


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


def prompts_from_documents(tokenizer, shard_paths: list[str], n: int, words: int = 4) -> list[str]:
    """The first `words` words of the first n documents of the shards (fewer if the shards hold fewer):
    prompts that look like the data, whatever it is (code, books, chat)."""
    from nanowhale.data.shards import read_shard

    bos = tokenizer.special_id("<|bos|>")
    prompts = []
    for path in shard_paths:
        tokens = read_shard(path)
        for start in np.flatnonzero(tokens == bos)[: n - len(prompts)]:
            head = tokens[start + 1: start + 1 + 4 * words]
            head = head[: np.argmax(head == bos)] if (head == bos).any() else head
            text = tokenizer.decode(head.tolist())
            cut = [m.end() for m in re.finditer(r"\S+", text)]
            if cut:
                prompts.append(text[: cut[min(words, len(cut)) - 1]])
        if len(prompts) >= n:
            break
    return prompts


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


@dataclass
class TextDelta:
    text: str                     # new text since the previous delta (may be empty on the last one)
    tokens: int                   # tokens generated so far
    finish_reason: str | None = None  # on the last delta: "stop" (stop token or string) or "length"


class TextAssembler:
    """Turns a generation's tokens, fed as they come, into TextDelta: decoded text (never half a UTF-8 character),
    cut before the first stop string (text that might begin one is held back until it cannot), ending at a stop
    token (not in the text) or when the generation ends. `finished` once the last delta has been returned.
    Each feed decodes only its new tokens (the C++ StreamDecoder) and searches only the text not yet returned,
    so a stream of n tokens costs O(n)."""

    def __init__(self, tokenizer, stop_tokens=(), stop=()):
        self.decoder = _C.StreamDecoder(tokenizer)
        self.stop_tokens = frozenset(stop_tokens)
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.unsent = ""  # decoded text not returned yet (at most `hold` characters: they may begin a stop string)
        self.produced = 0  # tokens fed, the stop token included
        self.finished = False

    def feed(self, new_ids: list[int], ended: bool, stopped: bool) -> TextDelta | None:
        """new_ids: the generation's next tokens; ended: it produced its last; stopped: it produced a stop token."""
        self.produced += len(new_ids)
        if stopped:  # the stop token is among the new ones (the generation ends at it): cut it and what follows
            new_ids = new_ids[: next((i for i, t in enumerate(new_ids) if t in self.stop_tokens), len(new_ids))]
        text = self.unsent + self.decoder.push(new_ids, final=ended)
        # A stop string wholly in the text returned already would have matched then: search the unsent text only.
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.finished = True
            return TextDelta(text[:cut], self.produced, "stop")
        if ended:
            self.finished = True
            return TextDelta(text, self.produced, "stop" if stopped else "length")
        upto = len(text) - self.hold
        self.unsent = text[max(upto, 0):]
        return TextDelta(text[:upto], self.produced) if upto > 0 else None


def stream_text(model, tokenizer, prompt_ids, max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
                top_p: float = 1.0, seed: int = 0, stop_tokens: list[int] | tuple[int, ...] = (),
                stop: list[str] | tuple[str, ...] = (), chunk: int = 1):
    """Yields TextDelta (TextAssembler) as the C++ Generation produces tokens, `chunk` at a time, ending at a stop
    token, a stop string or max_new_tokens (capped by seq_len)."""
    T = model.config.seq_len
    if len(prompt_ids) >= T:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the model's seq_len is {T}")
    new = min(max_new_tokens, T - len(prompt_ids))
    prompt = np.asarray(prompt_ids, dtype=np.int32)[None, :]
    gen = model.start_generation(prompt, new, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                 stop_tokens=list(stop_tokens))
    text = TextAssembler(tokenizer, stop_tokens, stop)
    while not gen.done:
        delta = text.feed(gen.step(chunk)[0].tolist(), gen.done, gen.stopped[0])
        if delta is not None:
            yield delta
        if text.finished:
            return
    yield TextDelta("", gen.produced, "length")  # max_new_tokens == 0


__all__ = ["TextAssembler", "TextDelta", "encode_prompt", "generate_ids", "sample", "stream_text"]
