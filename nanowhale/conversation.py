"""The one conversation format: messages -> token ids + loss mask (SFT, DPO, RL, chat, eval all use it).

A conversation is a list of messages `{"role": "system"|"user"|"assistant", "content": str}`: at most one
system message, first; then user and assistant turns alternating, starting with a user turn. Rendered:

    <|bos|> [<|system_start|> system <|system_end|>]
            <|user_start|> user <|user_end|> <|assistant_start|> assistant <|assistant_end|> ...

`loss_mask[i] == 1` where token `ids[i]` is to be predicted: the content of every assistant turn and its
`<|assistant_end|>` (so the model learns to stop); everything else (bos, system, user turns, the
`<|assistant_start|>` markers) is 0. For next-token training, `targets[t] = ids[t + 1]` is weighted by
`loss_mask[t + 1]`. An empty assistant turn still teaches `<|assistant_end|>`.

Truncation rule: with `max_tokens`, a longer rendering keeps its first `max_tokens` ids and mask entries
(the head of the dialogue, where the context of every kept assistant token lies); the rest is dropped.
A conversation may end up with nothing to learn (no assistant turn, or all of them cut off): its mask is
all zeros, and callers that train on it skip it and count it (`render_dataset`), never divide by zero.

`render_for_completion(messages)` renders a prompt that ends with a user turn, followed by
`<|assistant_start|>`, for the model to continue (chat, RL sampling, generative eval).

Readers: `read_openai_jsonl` (`{"messages": [...]}` per line; `openai_messages` for one record),
`parse_hh_dialogue` / `read_hh_rlhf` ("\\n\\nHuman: ... \\n\\nAssistant: ..." dialogues, chosen/rejected pairs).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROLES = ("system", "user", "assistant")
_SPECIALS = ("<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
             "<|system_start|>", "<|system_end|>")


def _special_ids(tokenizer) -> dict[str, int]:
    return {name: tokenizer.special_id(name) for name in _SPECIALS}


def validate_messages(messages, where: str = "conversation", allow_final_assistant: bool = True) -> None:
    """ValueError naming `where` and the message index unless `messages` follows the format above."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{where}: messages must be a non-empty list, got {type(messages).__name__}")
    expected = "user"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}: message {i} must be a dict with 'role' and 'content'")
        role, content = m["role"], m["content"]
        if not isinstance(content, str):
            raise ValueError(f"{where}: message {i} content must be a string, got {type(content).__name__}")
        if role not in ROLES:
            raise ValueError(f"{where}: message {i} has role {role!r}; expected one of {ROLES}")
        if role == "system":
            if i != 0:
                raise ValueError(f"{where}: message {i} is a system message; only the first message may be one")
            continue
        if role != expected:
            raise ValueError(f"{where}: message {i} has role {role!r} where {expected!r} was expected "
                             "(user and assistant turns alternate, starting with user)")
        expected = "assistant" if role == "user" else "user"
    if messages[-1]["role"] == "system":
        raise ValueError(f"{where}: a system message alone is not a conversation")
    if not allow_final_assistant and messages[-1]["role"] != "user":
        raise ValueError(f"{where}: a completion prompt must end with a user message, "
                         f"got {messages[-1]['role']!r}")


def _assemble(sp: dict[str, int], messages, encoded: Sequence[Sequence[int]], for_completion: bool):
    """(ids, mask) from messages whose contents are already encoded (one id list per message)."""
    ids: list[np.ndarray] = [np.array([sp["<|bos|>"]], np.int32)]
    mask: list[np.ndarray] = [np.zeros(1, np.uint8)]
    for m, content in zip(messages, encoded):
        start, end = sp[f"<|{m['role']}_start|>"], sp[f"<|{m['role']}_end|>"]
        body = np.asarray(content, dtype=np.int32)
        ids += [np.array([start], np.int32), body, np.array([end], np.int32)]
        learn = 1 if m["role"] == "assistant" else 0
        mask += [np.zeros(1, np.uint8), np.full(len(body) + 1, learn, np.uint8)]
    if for_completion:
        ids.append(np.array([sp["<|assistant_start|>"]], np.int32))
        mask.append(np.zeros(1, np.uint8))
    return np.concatenate(ids), np.concatenate(mask)


def _truncate(ids: np.ndarray, mask: np.ndarray, max_tokens: int | None):
    if max_tokens is None:
        return ids, mask
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    return ids[:max_tokens], mask[:max_tokens]


def render_conversation(tokenizer, messages, max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 (N,), loss_mask uint8 (N,)) of one conversation; see the module docstring."""
    validate_messages(messages)
    encoded = tokenizer.encode_batch([m["content"] for m in messages], num_threads=1)
    ids, mask = _assemble(_special_ids(tokenizer), messages, encoded, for_completion=False)
    return _truncate(ids, mask, max_tokens)


def render_for_completion(tokenizer, messages) -> np.ndarray:
    """ids int32 (N,) of a prompt ending with a user turn, then `<|assistant_start|>`: generation starts here."""
    validate_messages(messages, allow_final_assistant=False)
    encoded = tokenizer.encode_batch([m["content"] for m in messages], num_threads=1)
    ids, _ = _assemble(_special_ids(tokenizer), messages, encoded, for_completion=True)
    return ids


@dataclass
class RenderedDataset:
    """Rendered conversations with something to learn; `skipped` counts those with an all-zero mask."""

    ids: list[np.ndarray]
    masks: list[np.ndarray]
    skipped: int
    truncated: int


def render_dataset(tokenizer, conversations, max_tokens: int | None = None, num_threads: int = 0) -> RenderedDataset:
    """Renders many conversations (contents encoded in one threaded batch); drops and counts the ones whose
    mask is all zeros after truncation, and counts the ones truncated."""
    for i, messages in enumerate(conversations):
        validate_messages(messages, where=f"conversation {i}")
    texts = [m["content"] for messages in conversations for m in messages]
    encoded = tokenizer.encode_batch(texts, num_threads=num_threads)
    sp = _special_ids(tokenizer)
    out = RenderedDataset([], [], 0, 0)
    k = 0
    for messages in conversations:
        ids, mask = _assemble(sp, messages, encoded[k:k + len(messages)], for_completion=False)
        k += len(messages)
        if max_tokens is not None and len(ids) > max_tokens:
            out.truncated += 1
        ids, mask = _truncate(ids, mask, max_tokens)
        if not mask.any():
            out.skipped += 1
            continue
        out.ids.append(ids)
        out.masks.append(mask)
    return out


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def json_lines(path):
    """(line number, parsed object) of a JSONL file (.gz allowed); ValueError naming file:line on bad JSON."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: invalid JSON ({e.msg})") from None


def openai_messages(obj, where: str = "record") -> list[dict]:
    """The validated messages of one OpenAI-style record `{"messages": [...]}` (other keys of a message dropped)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        raise ValueError(f"{where}: expected an object with a 'messages' list")
    messages = [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m
                for m in obj["messages"]]
    validate_messages(messages, where=where)
    return messages


def read_openai_jsonl(path) -> list[list[dict]]:
    """Conversations from OpenAI-style JSONL: one `{"messages": [{"role", "content"}, ...]}` per line."""
    return [openai_messages(obj, where=f"{path}:{n}") for n, obj in json_lines(path)]


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_hh_dialogue(text: str, where: str = "dialogue") -> list[dict]:
    """Messages of one "\\n\\nHuman: ... \\n\\nAssistant: ..." dialogue (hh-rlhf). Consecutive turns of one
    speaker are joined with a blank line (hh-rlhf has a few); text before the first turn is an error."""
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError(f"{where}: text before the first 'Human:' turn")
    messages: list[dict] = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    if not messages:
        raise ValueError(f"{where}: no 'Human:' or 'Assistant:' turns")
    validate_messages(messages, where=where)
    return messages


def read_hh_rlhf(path) -> list[dict]:
    """Preference pairs `{"prompt": messages, "chosen": messages, "rejected": messages}` from hh-rlhf JSONL.

    `prompt` is the shared dialogue up to the final assistant turn; `chosen`/`rejected` are the full
    dialogues. Pairs whose two sides differ before their final assistant turn are kept (`prompt` is then
    the chosen side's) — the losses only use each side's own tokens."""
    out = []
    for n, obj in json_lines(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("chosen"), str) or not isinstance(obj.get("rejected"), str):
            raise ValueError(f"{path}:{n}: expected an object with string 'chosen' and 'rejected'")
        chosen = parse_hh_dialogue(obj["chosen"], where=f"{path}:{n} chosen")
        rejected = parse_hh_dialogue(obj["rejected"], where=f"{path}:{n} rejected")
        prompt = chosen[:-1] if chosen[-1]["role"] == "assistant" else chosen
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


__all__ = ["ROLES", "RenderedDataset", "json_lines", "openai_messages", "parse_hh_dialogue", "read_hh_rlhf",
           "read_openai_jsonl", "render_conversation", "render_dataset", "render_for_completion", "validate_messages"]
