"""Golden tests of the conversation renderer: ids and loss masks with a byte-level tokenizer (id = byte value,
specials from 256), so every expected id below can be read off the text."""

import gzip
import json

import numpy as np
import pytest

from nanowhale.conversation import (parse_hh_dialogue, read_hh_rlhf, read_openai_jsonl, render_conversation,
                                    render_dataset, render_for_completion)
from nanowhale.data.tokenizer import Tokenizer, default_special_tokens

BOS, US, UE, AS, AE, SS, SE = 256, 257, 258, 259, 260, 261, 262


@pytest.fixture(scope="module")
def tok():
    t = Tokenizer.from_ranks({bytes([i]): i for i in range(256)},
                             {name: 256 + k for k, name in enumerate(default_special_tokens())})
    assert [t.special_id(n) for n in ("<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>",
                                      "<|assistant_end|>", "<|system_start|>", "<|system_end|>")] == \
        [BOS, US, UE, AS, AE, SS, SE]
    return t


def b(text):
    return list(text.encode())


def test_single_turn(tok):
    ids, mask = render_conversation(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert ids.dtype == np.int32 and mask.dtype == np.uint8
    assert ids.tolist() == [BOS, US, *b("hi"), UE, AS, *b("yo"), AE]
    assert mask.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1]


def test_system_multi_turn_and_empty_assistant_turn(tok):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"}, {"role": "user", "content": "é"},
                {"role": "assistant", "content": ""}]
    ids, mask = render_conversation(tok, messages)
    assert ids.tolist() == [BOS, SS, *b("S"), SE, US, *b("hi"), UE, AS, *b("yo"), AE, US, 195, 169, UE, AS, AE]
    assert mask.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1]  # the empty turn learns its end


def test_truncation_keeps_the_head(tok):
    messages = [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "cdef"}]
    full_ids, full_mask = render_conversation(tok, messages)
    ids, mask = render_conversation(tok, messages, max_tokens=8)
    assert ids.tolist() == full_ids[:8].tolist() == [BOS, US, *b("ab"), UE, AS, *b("cd")]
    assert mask.tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="max_tokens"):
        render_conversation(tok, messages, max_tokens=0)


def test_render_for_completion(tok):
    prompt = render_for_completion(tok, [{"role": "user", "content": "2+2"}])
    assert prompt.tolist() == [BOS, US, *b("2+2"), UE, AS]
    with pytest.raises(ValueError, match="must end with a user message"):
        render_for_completion(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])


def test_dataset_skips_and_counts_conversations_with_nothing_to_learn(tok):
    convs = [
        [{"role": "user", "content": "why?"}],                                                # no assistant turn
        [{"role": "user", "content": "x" * 40}, {"role": "assistant", "content": "late"}],    # cut before it
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
    ]
    ds = render_dataset(tok, convs, max_tokens=16)
    assert (ds.skipped, ds.truncated, len(ds.ids)) == (2, 1, 1)
    assert ds.ids[0].tolist() == [BOS, US, *b("q"), UE, AS, *b("a"), AE]
    assert ds.masks[0].tolist() == [0, 0, 0, 0, 0, 1, 1]


@pytest.mark.parametrize("messages, match", [
    ([], "non-empty list"),
    ([{"role": "assistant", "content": "a"}], "'user' was expected"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "'assistant' was expected"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}], "only the first message"),
    ([{"role": "tool", "content": "a"}], "role 'tool'"),
    ([{"role": "user", "content": 3}], "content must be a string"),
    ([{"role": "user"}], "'role' and 'content'"),
    ([{"role": "system", "content": "s"}], "system message alone"),
])
def test_malformed_conversations_raise(tok, messages, match):
    with pytest.raises(ValueError, match=match):
        render_conversation(tok, messages)


def test_openai_jsonl_reader(tmp_path):
    good = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello", "name": "bot"}]}
    p = tmp_path / "chat.jsonl"
    p.write_text(json.dumps(good) + "\n\n" + json.dumps({"messages": good["messages"][1:2]}) + "\n")
    convs = read_openai_jsonl(p)
    assert convs == [[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}], [{"role": "user", "content": "hi"}]]
    p.write_text(json.dumps(good) + "\n" + json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n")
    with pytest.raises(ValueError, match=r"chat.jsonl:2: message 0 has role 'bot'"):
        read_openai_jsonl(p)
    p.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"chat.jsonl:1: invalid JSON"):
        read_openai_jsonl(p)
    with pytest.raises(ValueError, match="no such file"):
        read_openai_jsonl(tmp_path / "missing.jsonl")


def test_hh_dialogue_parser():
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: More?\n\nHuman: Please.\n\nAssistant:"
    assert parse_hh_dialogue(text) == [
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "More?\n\nPlease."}, {"role": "assistant", "content": ""}]
    with pytest.raises(ValueError, match="before the first"):
        parse_hh_dialogue("preamble\n\nHuman: a")
    with pytest.raises(ValueError, match="'user' was expected"):
        parse_hh_dialogue("\n\nAssistant: I start")


def test_hh_rlhf_reader(tmp_path):
    pair = {"chosen": "\n\nHuman: Q\n\nAssistant: good", "rejected": "\n\nHuman: Q\n\nAssistant: bad"}
    p = tmp_path / "pairs.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(json.dumps(pair) + "\n" + json.dumps({"chosen": 1, "rejected": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"pairs.jsonl.gz:2: expected an object with string 'chosen'"):
        read_hh_rlhf(p)
    with gzip.open(p, "wt") as f:
        f.write(json.dumps(pair) + "\n")
    [rec] = read_hh_rlhf(p)
    assert rec["prompt"] == [{"role": "user", "content": "Q"}]
    assert rec["chosen"][-1] == {"role": "assistant", "content": "good"}
    assert rec["rejected"][-1] == {"role": "assistant", "content": "bad"}
