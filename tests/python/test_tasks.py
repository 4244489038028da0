"""Evaluation tasks: scorers on hand-made items (a stub preferring gold scores 100%, its opposite 0%), the
continuation log-likelihood against token_losses at the context/continuation boundary, statistics, the
generic JSONL task, the real data files, and `nanowhale eval --task`."""

import json
import math

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config
from nanowhale.cli import main
from nanowhale.tasks import (JsonlMultipleChoice, ModelScorer, continuation_logprobs, make_task, make_tasks,
                             run_task, run_tasks)
from nanowhale.tasks.base import shared_data_dir
from nanowhale.tasks.gsm8k import final_number
from nanowhale.tasks.runner import stderr

HAND_MADE = {
    "hellaswag": [{"activity_label": "Cooking", "ctx": "A man cracks an egg. he", "label": 2,
                   "endings": ["flies away.", "sings.", "fries it in a pan.", "reads a book."]},
                  {"activity_label": "Roofing", "ctx": "A woman climbs a ladder. she", "label": 0,
                   "endings": ["removes old shingles.", "swims.", "bakes bread.", "sleeps."]}],
    "arc-easy": [{"query": "Question: What do plants need to make food?", "choices": ["sunlight", "sand", "noise"],
                  "gold": 0},
                 {"query": "Question: Which is a liquid?", "choices": ["ice", "steam", "water", "rock"], "gold": 2}],
    "arc-challenge": [{"query": "Question: What causes tides?", "choices": ["wind", "the moon", "fish", "ships"],
                       "gold": 1}],
    "mmlu": [{"subject": "high_school_mathematics", "question": "2 + 2 =", "choices": ["3", "4", "5", "22"],
              "answer": "B"},
             {"subject": "astronomy", "question": "The Sun is a", "choices": ["planet", "moon", "comet", "star"],
              "answer": "D"}],
    "piqa": [{"goal": "Open a jar.", "sol1": "Twist the lid.", "sol2": "Eat the lid.", "label": 0},
             {"goal": "Dry wet hands.", "sol1": "Use water.", "sol2": "Use a towel.", "label": 1}],
}


class PreferenceStub:
    """A 'model' whose log-likelihood is 0 for the continuation it prefers after each context, -10 otherwise."""

    def __init__(self, task, items, prefer_gold: bool):
        self.preferred = {}
        for item in items:
            r = task.render(item)
            pick = r.gold if prefer_gold else (r.gold + 1) % len(r.choices)
            self.preferred[r.context] = r.choices[pick]

    def loglikelihoods(self, requests):
        return [0.0 if self.preferred[c] == x else -10.0 for c, x in requests]


def with_items(task, items):
    task.load = lambda: items
    return task


@pytest.mark.parametrize("name", sorted(HAND_MADE))
@pytest.mark.parametrize("prefer_gold, expected", [(True, 1.0), (False, 0.0)])
def test_multiple_choice_scorer_follows_the_preferred_continuation(name, prefer_gold, expected):
    items = HAND_MADE[name]
    task = with_items(make_task(name), items)
    r = run_task(PreferenceStub(task, items, prefer_gold), task)
    assert r["acc"] == expected and r["acc_norm"] == expected and r["n"] == len(items)
    assert r["chance"] == pytest.approx(np.mean([1 / len(task.render(i).choices) for i in items]))


class AnswerStub:
    def __init__(self, right: bool):
        self.right = right

    def complete_all(self, prompts, stops, max_new_tokens):
        assert all("\n\n" in stop for stop in stops) and len(stops) == len(prompts) == len(max_new_tokens)
        return [" She has 3 + 4 = 7 apples.\n#### 7" if self.right else " The answer is 8."] * len(prompts)


@pytest.mark.parametrize("right, expected", [(True, 1.0), (False, 0.0)])
def test_gsm8k_exact_match(right, expected):
    item = {"question": "Ann has 3 apples and gets 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}
    task = with_items(make_task("gsm8k"), [item, item])
    r = run_task(AnswerStub(right), task)
    assert r["acc"] == expected and r["chance"] == 0.0 and r["kind"] == "generative"
    assert r["examples"][0]["target"] == "7"


def test_final_number():
    assert final_number("so 1,000 in all\n#### 1,000") == "1000"
    assert final_number("#### -3") == "-3"
    assert final_number("it costs 12.0 dollars, then 18.") == "18"
    assert final_number("12.0") == "12"
    assert final_number("no numbers here") is None


def trained_like(cfg, seed=3):
    model = nw.Model(cfg, seed=0)
    rng = np.random.default_rng(seed)
    for name in model.parameter_names():
        shape = model.get_param(name).shape
        model.set_param(name, rng.normal(1.0 if model.parameter_kind(name) == "scalar" else 0.0, 0.3, size=shape))
    return model


def reference_logprob(model, ctx, cont):
    """log p(cont | ctx) from the full logits: position t predicts token t + 1."""
    seq = np.asarray(ctx + cont)
    logits = model.logits(seq[None, :-1])[0].astype(np.float64)          # (L - 1, V)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return sum(logp[len(ctx) - 1 + j, tok] for j, tok in enumerate(cont))


def test_continuation_logprob_is_the_sum_over_exactly_its_tokens():
    cfg = micro_config()
    model = trained_like(cfg)
    rng = np.random.default_rng(0)
    requests = [(rng.integers(0, cfg.vocab_size, n).tolist(), rng.integers(0, cfg.vocab_size, m).tolist())
                for n, m in [(1, 1), (3, 2), (5, 4), (2, 7), (9, 1), (4, 4)]]
    got = continuation_logprobs(model, requests, batch_rows=4)  # mixed lengths: padding inside batches
    want = [reference_logprob(model, c, x) for c, x in requests]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(continuation_logprobs(model, requests, batch_rows=1), got, rtol=1e-6)
    # One position off at the boundary (the last context token counted, or the first continuation token
    # dropped) gives a different number: the test can see that bug.
    c, x = requests[2]
    assert not np.isclose(got[2], reference_logprob(model, c[:-1], [c[-1]] + x))
    assert not np.isclose(got[2], reference_logprob(model, c + x[:1], x[1:]))


def test_long_contexts_are_cut_from_the_left():
    cfg = micro_config()  # seq_len 16
    model = trained_like(cfg)
    ctx, cont = list(range(1, 30)), [5, 6, 7]
    got = continuation_logprobs(model, [(ctx, cont)])
    keep = (ctx + cont)[-(cfg.seq_len + 1):]
    np.testing.assert_allclose(got, [reference_logprob(model, keep[:-3], cont)], rtol=1e-5)


def test_continuations_longer_than_seq_len_are_scored_in_windows():
    cfg = micro_config()  # seq_len 16
    model = trained_like(cfg)
    rng = np.random.default_rng(1)
    ctx, cont = rng.integers(0, cfg.vocab_size, 5).tolist(), rng.integers(0, cfg.vocab_size, 40).tolist()
    seq, T = ctx + cont, cfg.seq_len
    # token j (j >= 5) is predicted from the window that scores it: windows of T predictions from j = 5 on,
    # each ending at its last scored token and reaching back T + 1 tokens
    want = 0.0
    for a in range(5, len(seq), T):
        b = min(a + T, len(seq))
        lo = max(0, b - T - 1)
        want += reference_logprob(model, seq[lo:a], seq[a:b])
    got = continuation_logprobs(model, [(ctx, cont), ([1, 2], [3])], batch_rows=2)
    np.testing.assert_allclose(got, [want, reference_logprob(model, [1, 2], [3])], rtol=1e-5)


def test_stderr_and_aggregate():
    x = np.array([1, 0, 1, 1, 0, 1, 0, 1], dtype=float)
    assert stderr(x) == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)))
    items = HAND_MADE["piqa"]
    tasks = [with_items(make_task("piqa"), items), with_items(make_task("mmlu"), HAND_MADE["mmlu"])]

    class Mixed:  # right on piqa, wrong on mmlu
        def loglikelihoods(self, requests):
            out = []
            for c, x in requests:
                good = ("Twist" in x or "towel" in x) if "Question:" in c else False
                out.append(0.0 if good else -1.0)
            return out

    res = run_tasks(Mixed(), tasks)
    # piqa: (1 - 0.5) / 0.5 = 1; mmlu picks the first choice (ties): acc 0 -> (0 - 0.25) / 0.75
    assert res["aggregate"] == pytest.approx((1.0 + (-1 / 3)) / 2)


def test_fewshot_examples_are_seeded_and_never_the_item(tmp_path):
    items = [{"context": f"Q{i}:", "choices": ["a", "b"], "gold": i % 2} for i in range(6)]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in items))
    task = JsonlMultipleChoice(path)
    seen = []

    class Recorder:
        def loglikelihoods(self, requests):
            seen.extend(c for c, _ in requests[::2])
            return [0.0] * len(requests)

    run_task(Recorder(), task, shots=3)
    first = list(seen)
    seen.clear()
    run_task(Recorder(), task, shots=3)
    assert seen == first
    for i, ctx in enumerate(first):
        shots = ctx.split("\n\n")[:-1]
        assert len(shots) == 3 and ctx.endswith(f"Q{i}:") and not any(s.startswith(f"Q{i}:") for s in shots)
    with pytest.raises(ValueError, match="shots"):
        run_task(Recorder(), task, shots=6)


def test_generic_jsonl_task_with_field_names(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"question": "Sky colour?", "options": ["blue", "green"], "answer": "blue"},
            {"question": "Grass colour?", "options": ["blue", "green"], "answer": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = make_task(f"jsonl:{path}?context=question&choices=options&gold=answer&sep=%20%3D%20")
    assert [task.render(r).gold for r in rows] == [0, 1]
    assert task.render(rows[0]).choices == [" = blue", " = green"]
    r = run_task(PreferenceStub(task, rows, True), task)
    assert r["acc"] == 1.0
    with pytest.raises(ValueError, match="mine.jsonl:1: cannot tell the task kind"):
        make_task(f"jsonl:{path}")
    with pytest.raises(ValueError, match="mine.jsonl:1: missing field 'context'"):
        make_task(f"jsonl:{path}?kind=multiple_choice").load()
    with pytest.raises(ValueError, match="unknown option"):
        make_task(f"jsonl:{path}?answer=x")
    with pytest.raises(ValueError, match="unknown task"):
        make_tasks("hellaswag,nope")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "x", "choices": ["a", "b"], "gold": 0}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        make_task(f"jsonl:{bad}").load()


# What each folder's README says it holds.
REAL_COUNTS = {"hellaswag": 10042, "arc-easy": 2376, "arc-challenge": 1172, "mmlu": 14079, "piqa": 1838, "gsm8k": 1319}


def test_real_task_files_load_and_render():
    if not (shared_data_dir() / "hellaswag").is_dir():
        pytest.skip(f"no task data at {shared_data_dir()} (set NANOWHALE_SHARED_DATA)")
    for task in make_tasks("all"):
        items = task.load()
        assert len(items) == REAL_COUNTS[task.name], task.name
        if task.kind == "multiple_choice":
            rendered = [task.render(x) for x in items]
            assert all(len(r.choices) >= 2 for r in rendered)
        else:
            assert all(task.target(x) is not None for x in items)


def test_eval_task_cli_writes_results(micro_run, tmp_path, capsys):
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps({"context": f"The whale number {i} swims", "choices": ["deep.", "the cold"],
                                          "gold": i % 2}) for i in range(5)))
    assert main(["eval", "--ckpt", str(micro_run), "--task", f"jsonl:{path}", "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "jsonl:set.jsonl: acc" in out and "n=4" in out
    data = json.loads((micro_run / "eval_tasks.json").read_text())
    entry = next(iter(data["checkpoints"].values()))
    r = entry["tasks"]["jsonl:set.jsonl"]
    assert r["n"] == 4 and 0 <= r["acc"] <= 1 and entry["aggregate"] is not None
    # the same numbers as scoring directly
    run = nw.load(micro_run)
    assert entry["val_bpb"] == run.val_bpb()["val_bpb"] and f"val_bpb: {entry['val_bpb']:.4f}" in out
    direct = run_task(ModelScorer(run.model, run.tokenizer), make_task(f"jsonl:{path}"), limit=4)
    assert direct["acc"] == r["acc"] and direct["acc_norm"] == r["acc_norm"]
    assert main(["eval", "--ckpt", str(micro_run), "--task", "nope"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_model_scorer_completes_greedily_as_text_or_as_a_chat_turn(micro_run):
    from nanowhale.serve import Engine, Sampling

    run = nw.load(micro_run)
    engine = Engine(run)
    greedy = Sampling(max_tokens=20, temperature=0.0, stop=["\n\n"])
    base = "".join(d.text for d in engine.complete("the whale", greedy))
    chat = "".join(d.text for d in engine.chat([{"role": "user", "content": "the whale"}], greedy))
    assert ModelScorer(run.model, run.tokenizer).complete("the whale", ("\n\n",), 20) == base
    assert ModelScorer(run.model, run.tokenizer, chat=True).complete("the whale", ("\n\n",), 20) == chat


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_kind_comes_from_the_fields_or_the_kind_option(tmp_path):
    files = {"multiple_choice": {"context": "a", "choices": ["b", "c"], "gold": 0},
             "partial": {"context_options": ["a", "b"], "continuation": "c", "gold": 1},
             "continuation": {"context": "a", "continuation": "b"}, "rolling": {"text": "a b c"}}
    for kind, row in files.items():
        path = write_jsonl(tmp_path / f"{kind}.jsonl", [row])
        assert make_task(str(path)).kind == kind == make_task(f"jsonl:{path}").kind
    both = write_jsonl(tmp_path / "both.jsonl", [{"context": "a", "continuation": "b", "text": "a b"}])
    assert make_task(str(both)).kind == "rolling"
    assert make_task(f"{both}?kind=continuation").kind == "continuation"
    renamed = write_jsonl(tmp_path / "renamed.jsonl", [{"doc": "some text"}])
    assert make_task(f"{renamed}?text=doc").kind == "rolling"


class KnowingScorer:
    """A 'model' that knows one continuation per context (log-likelihood 0, greedy) and nothing else (-10)."""

    def __init__(self, known: dict[str, str]):
        self.known = known

    def loglikelihoods(self, requests):
        return [0.0 if self.known.get(c) == x else -10.0 for c, x in requests]

    def greedy(self, requests):
        return [self.known.get(c) == x for c, x in requests]


def test_partial_and_continuation_kinds_score_what_the_model_knows(tmp_path):
    partial = write_jsonl(tmp_path / "wino.jsonl", [
        {"context_options": ["Sarah won, so Sarah", "Sarah won, so Maria"], "continuation": "was happy.", "gold": 0},
        {"context_options": ["x so Sarah", "x so Maria", "x so Ann"], "continuation": "left.", "gold": "x so Ann"}])
    task = make_task(str(partial))
    knows = KnowingScorer({"Sarah won, so Sarah": " was happy.", "x so Ann": " left."})
    r = run_task(knows, task)
    assert r["acc"] == 1.0 and r["n"] == 2 and r["chance"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert run_task(KnowingScorer({"Sarah won, so Maria": " was happy.", "x so Sarah": " left."}), task)["acc"] == 0
    lambada = write_jsonl(tmp_path / "lambada.jsonl", [{"context": "The whale", "continuation": "swims"},
                                                        {"context": "The cat", "continuation": "sleeps"}])
    task = make_task(str(lambada))
    r = run_task(KnowingScorer({"The whale": " swims"}), task)
    assert r["acc"] == 0.5 and r["loglikelihood"] == -5.0 and r["perplexity"] == pytest.approx(math.exp(5.0))


def test_jsonl_kinds_through_the_micro_model(micro_run, tmp_path):
    """Partial scoring agrees with the log-likelihoods it compares; a continuation is an exact match exactly
    when it is the model's own greedy text; rolling documents give `nanowhale eval FILE`'s bits per byte."""
    run = nw.load(micro_run)
    scorer = ModelScorer(run.model, run.tokenizer)
    options = [["light falls in", "xq zz vv"], ["def return", "the whale"], ["index print", "class import"]]
    rows = [{"context_options": o, "continuation": "long lines", "gold": 0} for o in options]
    r = run_task(scorer, make_task(str(write_jsonl(tmp_path / "p.jsonl", rows))))
    ll = scorer.loglikelihoods([(c, " long lines") for o in options for c in o]).reshape(3, 2)
    assert r["acc"] == np.mean(ll.argmax(axis=1) == 0)

    known = []  # (context, a continuation the model produces greedily and that encodes back to its tokens)
    for ctx in ["the whale", "light falls", "def return", "class import", "index print", "the cold"]:
        text = scorer.complete(ctx, (), 2)
        if text and scorer.greedy([(ctx, text)])[0]:
            known.append((ctx, text))
    assert known, "no greedy continuation to test with"
    rows = [{"context": c, "continuation": x} for c, x in known] + [{"context": c, "continuation": "zq vv"}
                                                                      for c, _ in known]
    r = run_task(scorer, make_task(f"{write_jsonl(tmp_path / 'c.jsonl', rows)}?sep="))  # the text as generated
    assert r["acc"] == 0.5 and r["n"] == 2 * len(known)
    assert r["loglikelihood"] == pytest.approx(
        float(np.mean(scorer.loglikelihoods([(x["context"], x["continuation"]) for x in rows]))))

    docs = ["light falls in long lines " * 30, "def return class import value\n"]
    r = run_task(scorer, make_task(str(write_jsonl(tmp_path / "r.jsonl", [{"text": d} for d in docs]))))
    paths = []
    for i, d in enumerate(docs):
        paths.append(tmp_path / f"doc{i}.txt")
        paths[-1].write_text(d)
    whole = run.score_files([str(p) for p in paths])["total"]
    assert r["bits_per_byte"] == pytest.approx(whole["bpb"], rel=1e-12)
    assert r["tokens"] == whole["tokens"] and r["bytes"] == whole["bytes"]
    assert r["perplexity"] == pytest.approx(math.exp(whole["loss"]), rel=1e-12)


BAD_LINES = [  # (kind option, second line, what the error says)
    ("", "not json", r"bad.jsonl:2: not JSON"),
    ("", "[1, 2]", r"bad.jsonl:2: expected a JSON object"),
    ("", '{"context": "a", "gold": 0}', r"bad.jsonl:2: missing field 'choices'"),
    ("", '{"context": "a", "choices": "b", "gold": 0}', r"bad.jsonl:2: field 'choices' must be a list of at least 2"),
    ("", '{"context": "a", "choices": ["b"], "gold": 0}', r"bad.jsonl:2: field 'choices' must be a list of at least 2"),
    ("", '{"context": 3, "choices": ["b", "c"], "gold": 0}', r"bad.jsonl:2: field 'context' must be a string"),
    ("", '{"context": "a", "choices": ["b", "c"], "gold": 2}', r"bad.jsonl:2: field 'gold' 2 is outside the 2"),
    ("", '{"context": "a", "choices": ["b", "c"], "gold": "d"}', r"bad.jsonl:2: field 'gold' 'd' is not one of"),
    ("", '{"context": "a", "choices": ["b", "c"], "gold": true}', r"bad.jsonl:2: field 'gold' must be an index"),
    ("?kind=partial", '{"context_options": ["a", "b"], "gold": 0}', r"bad.jsonl:2: missing field 'continuation'"),
    ("?kind=partial", '{"context_options": ["a", "b"], "continuation": "c", "gold": 5}',
     r"bad.jsonl:2: field 'gold' 5 is outside"),
    ("?kind=partial", '{"context_options": "a", "continuation": "c", "gold": 0}',
     r"bad.jsonl:2: field 'context_options' must be a list"),
    ("?kind=continuation", '{"context": "a"}', r"bad.jsonl:2: missing field 'continuation'"),
    ("?kind=continuation", '{"context": "a", "continuation": ["b"]}', r"bad.jsonl:2: field 'continuation' must be a s"),
    ("?kind=rolling", '{"txt": "a"}', r"bad.jsonl:2: missing field 'text'"),
    ("?kind=rolling", '{"text": ""}', r"bad.jsonl:2: field 'text' is empty"),
    ("?kind=rolling", '{"text": 1}', r"bad.jsonl:2: field 'text' must be a string"),
]
GOOD_FIRST = {"": {"context": "a", "choices": ["b", "c"], "gold": 0},
              "?kind=partial": {"context_options": ["a", "b"], "continuation": "c", "gold": 0},
              "?kind=continuation": {"context": "a", "continuation": "b"}, "?kind=rolling": {"text": "a"}}


@pytest.mark.parametrize("option, line, message", BAD_LINES)
def test_each_malformed_line_is_a_clear_error(tmp_path, option, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD_FIRST[option], line])
    with pytest.raises(ValueError, match=message):
        make_task(f"{path}{option}").load()


def test_jsonl_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        make_task(f"{write_jsonl(tmp_path / 'a.jsonl', [{'text': 'a'}])}?kind=essay")
    with pytest.raises(ValueError, match="a.jsonl:1: cannot tell the task kind"):
        make_task(str(write_jsonl(tmp_path / "a.jsonl", [{"prompt": "a"}])))
    with pytest.raises(ValueError, match="does not exist"):
        make_task(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="no items"):
        make_task(str(write_jsonl(tmp_path / "empty.jsonl", [""])))
