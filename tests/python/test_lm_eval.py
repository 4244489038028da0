"""nanowhale as an lm-evaluation-harness model, against the real `lm-eval` package: the three request kinds
against the engine, the built-in sets scored through the harness and by `nanowhale eval --task` on the same
items, and the harness's own command line. Skips without lm-eval unless NANOWHALE_REQUIRE_LM_EVAL=1."""

import gzip
import json
import math
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import nanowhale as nw
from nanowhale.cli import main
from nanowhale.tasks import ModelScorer, make_task, run_task
from nanowhale.tasks.base import shared_data_dir
from test_tasks import HAND_MADE

try:
    import lm_eval  # noqa: F401
except ImportError:
    if os.environ.get("NANOWHALE_REQUIRE_LM_EVAL") == "1":
        raise
    pytest.skip("lm-eval is not installed (pip install '.[eval]'; NANOWHALE_REQUIRE_LM_EVAL=1 makes this a failure)",
                allow_module_level=True)

from lm_eval.api.instance import Instance  # noqa: E402

from nanowhale.lm_eval import NanowhaleLM  # noqa: E402
from nanowhale.lm_eval.task_dir import HARNESS_NAMES, task_dir  # noqa: E402

# Items of each built-in set scored both ways where the real files are here (GSM8K, generated token by
# token, fewer).
LIMIT = {"hellaswag": 300, "arc-easy": 300, "arc-challenge": 300, "mmlu": 300, "piqa": 300, "gsm8k": 20}
GSM8K_MADE = [{"question": "Tom has 2 apples and buys 3 more. How many apples does he have?",
               "answer": "2 + 3 = 5\n#### 5"},
              {"question": "A box holds 4 pens. How many pens are in 2 boxes?", "answer": "4 * 2 = 8\n#### 8"}]
FILES = {"hellaswag": "hellaswag/val.jsonl.gz", "arc-easy": "arc-easy/arc_easy.jsonl.gz",
         "arc-challenge": "arc-challenge/arc_challenge.jsonl.gz", "mmlu": "mmlu/test.jsonl.gz",
         "piqa": "piqa/valid.jsonl.gz", "gsm8k": "gsm8k/test.jsonl.gz"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The shared data when it is here; else the hand-made items of test_tasks.py in the same files' format
    (CI has no shared data: the comparisons then run on those few items)."""
    if (shared_data_dir() / "hellaswag").is_dir():
        return shared_data_dir()
    d = tmp_path_factory.mktemp("task_data")
    made = dict(HAND_MADE, gsm8k=GSM8K_MADE)
    for name, rel in FILES.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(d / rel, "wt") as f:
            f.write("\n".join(json.dumps(x) for x in made[name]) + "\n")
    with gzip.open(d / "mmlu/dev.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(x) for x in HAND_MADE["mmlu"]) + "\n")
    with gzip.open(d / "gsm8k/train.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(x) for x in GSM8K_MADE) + "\n")
    return d


@pytest.fixture(scope="module")
def run(micro_run):
    return nw.load(micro_run, device="cpu")


@pytest.fixture(scope="module")
def lm(run):
    return NanowhaleLM(run=run, batch_size=16)


def requests(kind, args):
    return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]


def test_loglikelihood_is_the_sum_of_token_losses_over_the_continuation(lm, run):
    tok, bos = run.tokenizer, run.tokenizer.special_id("<|bos|>")
    pairs = [("The whale", " swims deep."), ("light falls", " in long lines"), ("def", " return value"),
             ("x " * 90, " index print self")]  # the last is longer than seq_len: cut from the left
    got = lm.loglikelihood(requests("loglikelihood", pairs))
    T = run.model.config.seq_len
    for (ctx, cont), (ll, _) in zip(pairs, got):
        c, x = [bos] + tok.encode(ctx), tok.encode(cont)
        ids = np.asarray(c + x, dtype=np.int32)[-(T + 1):]
        targets = np.full(len(ids) - 1, -1, dtype=np.int32)
        targets[-len(x):] = ids[-len(x):]
        want = -float(run.model.token_losses(ids[None, :-1], targets[None]).sum(dtype=np.float64))
        assert ll == pytest.approx(want, rel=1e-6)
        # one token off at the boundary is a different number: the test sees that bug
        targets[-len(x) - 1] = ids[-len(x) - 1]
        assert not math.isclose(ll, -float(run.model.token_losses(ids[None, :-1], targets[None]).sum()), rel_tol=1e-6)


def test_is_greedy_says_whether_greedy_generation_gives_the_continuation(lm, run):
    from nanowhale.tasks.scoring import continuation_is_greedy

    tok, bos = run.tokenizer, run.tokenizer.special_id("<|bos|>")
    texts, want = [], []
    for ctx in ["The whale", "light falls in", "def return", "class import", "the cold"]:
        c = [bos] + tok.encode(ctx)
        new = run.model.generate(np.asarray([c], dtype=np.int32), 6, temperature=0.0)[0, len(c):].tolist()
        other = new[:-1] + [(new[-1] + 1) % run.model.config.vocab_size]
        assert continuation_is_greedy(run.model, [(c, new), (c, other), (c, new[:1])]).tolist() == [True, False, True]
        if tok.encode(tok.decode(new[:1])) == new[:1]:  # as text: a token that encodes back to itself
            texts += [(ctx, tok.decode(new[:1])), (ctx, tok.decode(other[-1:]))]
            want += [True, tok.encode(tok.decode(other[-1:])) == new[:1]]
    assert texts
    assert [g for _, g in lm.loglikelihood(requests("loglikelihood", texts))] == want


def test_loglikelihood_rolling_is_whole_file_scoring(lm, run, tmp_path):
    texts = ["light falls in long lines " * 40, "def return class import value\n" * 3]  # one longer than seq_len
    got = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(t,) for t in texts]))
    for i, (text, ll) in enumerate(zip(texts, got)):
        path = tmp_path / f"doc{i}.txt"
        path.write_text(text)
        whole = run.score_files([str(path)])["files"][0]   # what `nanowhale eval --ckpt RUN FILE` scores
        assert whole["bytes"] == len(text.encode())
        assert -ll / (math.log(2) * whole["bytes"]) == pytest.approx(whole["bpb"], rel=1e-12)
    assert len(run.tokenizer.encode(texts[0])) > run.model.config.seq_len


def test_generate_until_is_greedy_generate_cut_at_each_stop_string(lm, run):
    tok, bos = run.tokenizer, run.tokenizer.special_id("<|bos|>")
    prompt = "the whale"
    ids = [bos] + tok.encode(prompt)
    new = run.model.generate(np.asarray([ids], dtype=np.int32), 40, temperature=0.0)[0, len(ids):].tolist()
    if bos in new:
        new = new[: new.index(bos)]
    full = tok.decode(new)
    assert len(full) > 20
    stops = [full[k: k + 2] for k in (2, 9, 17)]
    args = [(prompt, {"until": [s], "max_gen_toks": 40}) for s in stops] + [(prompt, {"until": [], "max_gen_toks": 40})]
    got = lm.generate_until(requests("generate_until", args))
    for s, text in zip(stops, got):
        assert text == full[: full.find(s)] and s not in text
    assert got[-1] == full
    with pytest.raises(ValueError, match="greedily"):
        lm.generate_until(requests("generate_until", [(prompt, {"do_sample": True, "temperature": 1.0})]))


def harness_samples(lm, name, data_dir, limit):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    # include_defaults=False: lm-eval's own thousands of task YAMLs are not indexed (seconds each time)
    res = simple_evaluate(model=lm, tasks=[HARNESS_NAMES[name]], limit=limit, log_samples=True,
                          task_manager=TaskManager(include_path=str(task_dir(data_dir)), include_defaults=False))
    task = HARNESS_NAMES[name]
    return res["results"][task], sorted(res["samples"][task], key=lambda s: s["doc_id"])


@pytest.mark.parametrize("name", ["hellaswag", "arc-easy", "arc-challenge", "mmlu", "piqa"])
def test_builtin_multiple_choice_sets_score_the_same_both_ways(name, lm, run, data_dir, monkeypatch):
    """Same items, same requests, same log-likelihoods: `acc` is equal. The normalisations differ: the
    harness's acc_norm divides by the choice's characters and acc_bytes by its UTF-8 bytes, both without the
    space before it; nanowhale's acc_norm divides by the bytes of the continuation as scored (" " + choice).
    Each is checked against its own definition on the shared log-likelihoods."""
    monkeypatch.setenv("NANOWHALE_SHARED_DATA", str(data_dir))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = make_task(name)
    limit = LIMIT[name]
    ours = run_task(ModelScorer(run.model, run.tokenizer, batch_rows=16), task, limit=limit)
    theirs, samples = harness_samples(lm, name, data_dir, limit)
    items = task.load()[:limit]
    assert len(samples) == len(items) == ours["n"]
    assert theirs["acc,none"] == ours["acc"]
    acc_norm, acc_bytes, ours_norm = [], [], []
    for item, sample in zip(items, samples):
        r = task.render(item)
        assert [tuple(a) for a in sample["arguments"]] == [(r.context, c) for c in r.choices]  # the same requests
        ll = np.asarray([resp[0][0] for resp in sample["resps"]])
        choices = [c[1:] for c in r.choices]
        acc_norm.append(np.argmax(ll / [len(c) for c in choices]) == r.gold)
        acc_bytes.append(np.argmax(ll / [len(c.encode()) for c in choices]) == r.gold)
        ours_norm.append(np.argmax(ll / [len(c.encode()) for c in r.choices]) == r.gold)
    assert theirs["acc_norm,none"] == np.mean(acc_norm)
    assert theirs["acc_bytes,none"] == np.mean(acc_bytes)
    assert ours["acc_norm"] == np.mean(ours_norm)


def test_builtin_gsm8k_scores_the_same_both_ways(lm, run, data_dir, monkeypatch):
    monkeypatch.setenv("NANOWHALE_SHARED_DATA", str(data_dir))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = make_task("gsm8k")
    ours = run_task(ModelScorer(run.model, run.tokenizer), task, limit=LIMIT["gsm8k"])
    theirs, samples = harness_samples(lm, "gsm8k", data_dir, LIMIT["gsm8k"])
    assert theirs["exact_match,none"] == ours["acc"]
    scorer = ModelScorer(run.model, run.tokenizer)
    for item, sample in zip(task.load(), samples):
        assert sample["resps"][0][0] == scorer.complete(task.prompt(item), tuple(task.stop), task.max_new_tokens)


def test_lm_eval_command_line_runs_the_nanowhale_model(micro_run, data_dir, tmp_path, lm, run):
    """The harness's own CLI (`python -m nanowhale.lm_eval` is `lm_eval` with the model registered), offline."""
    env = dict(os.environ, NANOWHALE_SHARED_DATA=str(data_dir), HF_DATASETS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(sys.path))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "nanowhale.lm_eval", "--model", "nanowhale", "--model_args",
                           f"ckpt={micro_run}", "--device", "cpu", "--batch_size", "16", "--tasks", "nanowhale_piqa",
                           "--limit", "2", "--output_path", str(out)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=Path(nw.__file__).resolve().parent.parent)  # the nanowhale imported here
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nanowhale_piqa" in proc.stdout and "acc" in proc.stdout
    saved = json.loads(next(out.rglob("results_*.json")).read_text())
    theirs, _ = harness_samples(lm, "piqa", data_dir, 2)
    assert saved["results"]["nanowhale_piqa"]["acc,none"] == theirs["acc,none"]


def test_plain_lm_eval_finds_the_model_when_nanowhale_is_installed(micro_run, data_dir, tmp_path):
    """`lm_eval --model nanowhale` itself: the installed start-up hook adds the model to lm-eval's table."""
    try:
        metadata.distribution("nanowhale")
    except metadata.PackageNotFoundError:
        pytest.skip("nanowhale is used from the source tree here, not installed: no start-up hook, no entry points")
    found = [e for e in metadata.entry_points(group="lm_eval.models") if e.name == "nanowhale"]
    assert found and found[0].load() is NanowhaleLM
    lm_eval = Path(sys.executable).with_name("lm_eval")
    assert lm_eval.exists(), f"lm-eval's command is not beside {sys.executable}"
    env = dict(os.environ, NANOWHALE_SHARED_DATA=str(data_dir), HF_DATASETS_OFFLINE="1")
    out = tmp_path / "out"
    proc = subprocess.run([str(lm_eval), "--model", "nanowhale", "--model_args", f"ckpt={micro_run}", "--device", "cpu",
                           "--tasks", "nanowhale_piqa", "--include_path", str(task_dir(data_dir)), "--limit", "2",
                           "--output_path", str(out)], env=env, capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads(next(out.rglob("results_*.json")).read_text())
    assert saved["config"]["model"] == "nanowhale" and "acc,none" in saved["results"]["nanowhale_piqa"]


def test_nanowhale_eval_harness_writes_results_and_report_reads_them(micro_run, data_dir, monkeypatch, capsys, lm):
    monkeypatch.setenv("NANOWHALE_SHARED_DATA", str(data_dir))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert main(["eval", "--ckpt", str(micro_run), "--harness", "piqa,arc-easy", "--limit", "2", "--device",
                 "cpu"]) == 0
    out = capsys.readouterr().out
    assert "nanowhale_piqa" in out and "nanowhale_arc_easy" in out
    data = json.loads((micro_run / "eval_harness.json").read_text())
    entry = next(iter(data["checkpoints"].values()))
    theirs, _ = harness_samples(lm, "piqa", data_dir, 2)
    assert entry["tasks"]["nanowhale_piqa"]["acc"] == theirs["acc,none"] and entry["tasks"]["nanowhale_piqa"]["n"] == 2
    assert main(["report", str(micro_run)]) == 0
    report = capsys.readouterr().out
    assert "nanowhale_piqa" in report and f"{theirs['acc,none']:.3f}" in report
    assert main(["eval", "--ckpt", str(micro_run), "--harness", "no_such_task"]) == 2
    assert "unknown harness task" in capsys.readouterr().err


def test_partial_and_single_continuation_files_score_the_same_through_the_harness(lm, run, tmp_path):
    """The JSONL kinds against the harness's own forms of them (WinoGrande's multiple_input, LAMBADA's
    loglikelihood), on the same file: the same acc, and the same perplexity."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(json.dumps({"context_options": o, "continuation": " long lines", "gold": g}) for o, g in
                                 [(["light falls in", "xq zz vv"], 0), (["def return", "the whale"], 1),
                                  (["index print", "class import", "value self"], 2)]) + "\n")
    single = tmp_path / "single.jsonl"
    single.write_text("\n".join(json.dumps({"context": c, "continuation": x}) for c, x in
                                [("the whale", " swims"), ("light falls", " in"), ("def", " return")]) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "p.yaml").write_text(f"task: t_partial\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                  f"    test: {partial}\ntest_split: test\noutput_type: multiple_choice\n"
                                  "doc_to_text: gold\ndoc_to_choice: context_options\ndoc_to_target: continuation\n"
                                  "target_delimiter: ''\nmetric_list:\n  - metric: acc\n")
    (tasks / "s.yaml").write_text(f"task: t_single\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                  f"    test: {single}\ntest_split: test\noutput_type: loglikelihood\n"
                                  "doc_to_text: context\ndoc_to_target: continuation\ntarget_delimiter: ''\n"
                                  "metric_list:\n  - metric: perplexity\n  - metric: acc\n")
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    # one task per run: the same requests in the same batches as nanowhale's, so the same bits
    res = {"results": {t: simple_evaluate(model=lm, tasks=[t], task_manager=manager)["results"][t]
                       for t in ("t_partial", "t_single")}}
    scorer = ModelScorer(run.model, run.tokenizer)
    ours_partial = run_task(scorer, make_task(f"{partial}?sep="))
    ours_single = run_task(scorer, make_task(f"{single}?sep="))
    assert res["results"]["t_partial"]["acc,none"] == ours_partial["acc"]
    assert res["results"]["t_single"]["acc,none"] == ours_single["acc"]
    assert res["results"]["t_single"]["perplexity,none"] == ours_single["perplexity"]
