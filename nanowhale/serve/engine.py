"""Text generation for people and clients: one place where prompts become ids and ids become streamed text,
shared by `nanowhale chat` and `nanowhale serve`.

    engine = Engine(nw.load("runs/sft1"))
    for delta in engine.chat([{"role": "user", "content": "Hi"}], Sampling(max_tokens=64)): print(delta.text)

Completions are `<|bos|> prompt` continued until `<|bos|>` (the start of another document); chat renders the
messages with the conversation renderer (`render_for_completion`) and stops at `<|assistant_end|>`. The
limits of one request (max_tokens, prompt tokens) are checked here and raise RequestError with the OpenAI
error fields, so the server can answer with them and the REPL can print them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from nanowhale.conversation import render_for_completion
from nanowhale.generate import TextDelta, stream_text


class RequestError(ValueError):
    """A request the engine will not run: `status` (HTTP), `code` and `param` as in OpenAI's error bodies."""

    def __init__(self, message: str, status: int = 400, code: str | None = None, param: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.param, self.type, self.headers = status, code, param, type, headers


@dataclass
class Sampling:
    max_tokens: int | None = None  # None: as many as the context and the engine's cap allow
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0  # any 64-bit integer, signed (OpenAI's range) or unsigned; taken modulo 2^64
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # generate max_tokens whatever the model says (benchmarks; vLLM's name)
    max_tokens_field: str = "max_tokens"  # the request field max_tokens came from, named in errors


class Engine:
    def __init__(self, run, max_tokens_cap: int | None = None, max_prompt_tokens: int | None = None):
        """run: a LoadedModel. max_tokens_cap: the most tokens one request may generate (default: seq_len);
        max_prompt_tokens: the longest prompt accepted (default: seq_len - 1)."""
        self.run, self.model, self.tokenizer = run, run.model, run.tokenizer
        self.seq_len = self.model.config.seq_len
        self.max_tokens_cap = max_tokens_cap or self.seq_len
        self.max_prompt_tokens = min(max_prompt_tokens or self.seq_len - 1, self.seq_len - 1)
        self.bos = self.tokenizer.special_id("<|bos|>")
        self.assistant_end = self.tokenizer.special_id("<|assistant_end|>")

    def completion_ids(self, prompt: str) -> list[int]:
        return [self.bos] + self.tokenizer.encode(prompt)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        try:
            return render_for_completion(self.tokenizer, messages).tolist()
        except ValueError as e:
            raise RequestError(str(e), param="messages") from None

    def _check(self, ids: list[int], s: Sampling) -> int:
        """The number of tokens to generate, or RequestError."""
        if len(ids) > self.max_prompt_tokens:
            raise RequestError(f"This model's maximum context length is {self.seq_len} tokens and prompts may use "
                               f"{self.max_prompt_tokens}; your prompt has {len(ids)} tokens.",
                               code="context_length_exceeded", param="messages")
        room = self.seq_len - len(ids)
        if s.max_tokens is None:
            return min(room, self.max_tokens_cap)
        if s.max_tokens < 1:
            raise RequestError(f"{s.max_tokens_field} must be at least 1, got {_short(s.max_tokens)}",
                               param=s.max_tokens_field)
        if s.max_tokens > self.max_tokens_cap:
            raise RequestError(f"{s.max_tokens_field} is {_short(s.max_tokens)}; this server allows at most "
                               f"{self.max_tokens_cap}", param=s.max_tokens_field, code="max_tokens_exceeded")
        return min(s.max_tokens, room)

    def _check_sampling(self, s: Sampling) -> None:
        # Every number is checked against the range the engine takes (its binding refuses the rest with a
        # ValueError, never a crash): a request gets a 400 naming the field.
        if not -2**63 <= s.seed < 2**64:
            raise RequestError(f"seed must be a 64-bit integer, got {_short(s.seed)}", param="seed")
        if not 0 <= s.temperature <= 2:
            raise RequestError(f"temperature must be between 0 and 2, got {s.temperature}", param="temperature")
        if not 0 < s.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1], got {s.top_p}", param="top_p")
        if not 0 <= s.top_k < 2**31:
            raise RequestError(f"top_k must be in [0, 2^31), got {_short(s.top_k)}", param="top_k")
        if len(s.stop) > 4:
            raise RequestError(f"at most 4 stop sequences, got {len(s.stop)}", param="stop")

    def prepare(self, ids: list[int], s: Sampling) -> int:
        """Checks a request before anything is sent; returns how many tokens it may generate."""
        self._check_sampling(s)
        return self._check(ids, s)

    def stop_tokens(self, s: Sampling, chat: bool) -> list[int]:
        return [] if s.ignore_eos else [self.assistant_end, self.bos] if chat else [self.bos]

    def stream(self, ids: list[int], s: Sampling, chat: bool, chunk: int = 1) -> Iterator[TextDelta]:
        """One generation on its own (the REPL); the server batches its generations (batcher.py)."""
        n = self.prepare(ids, s)
        return stream_text(self.model, self.tokenizer, ids, n, temperature=s.temperature, top_k=s.top_k,
                           top_p=s.top_p, seed=s.seed % 2**64, stop_tokens=self.stop_tokens(s, chat), stop=s.stop,
                           chunk=chunk)

    def complete(self, prompt: str, s: Sampling, chunk: int = 1) -> Iterator[TextDelta]:
        return self.stream(self.completion_ids(prompt), s, chat=False, chunk=chunk)

    def chat(self, messages: list[dict], s: Sampling, chunk: int = 1) -> Iterator[TextDelta]:
        return self.stream(self.chat_ids(messages), s, chat=True, chunk=chunk)


def _short(value) -> str:
    """A number as text, shortened (a request may send a 10,000-digit integer)."""
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


__all__ = ["Engine", "RequestError", "Sampling"]
