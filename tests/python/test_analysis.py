"""nanowhale.analysis: run directories, routing and tables as numbers (figures: test_plots.py)."""

import json

import numpy as np
import pytest

import nanowhale as nw
from nanowhale import analysis
from nanowhale.analysis.routing import TOKEN_CLASSES, Routing


def _step(step, loss, load, bias=None, **extra):
    experts = [{"layer": 1, "load": load, "max_violation": 0.5, "dead": int(load.count(0))}]
    if bias is not None:
        experts[0]["bias"] = bias
    rec = {"step": step, "tokens": 100 * step, "loss": loss, "tok_per_s": 50.0, "gflops": 50.0 * 7e3 / 1e9,
           "step_seconds": 2.0, "grad_norm": 1.5, "experts": experts}
    rec.update(extra)
    return rec


def _write_run(d, records, tail=""):
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return d


def test_load_run_tables_from_metrics(tmp_path):
    records = [
        {"event": "start", "step": 0, "device": "cpu", "params_total": 10, "params_active": 6, "batch_tokens": 100},
        _step(2, 3.0, [4, 0, 2, 2], bias=[0.1, -0.1, 0.0, 0.0]),
        _step(4, 2.5, [2, 2, 2, 2], bias=[0.0, 0.0, 0.0, 0.0], epoch=0.5),
        {"event": "eval", "step": 4, "val_bpb": 2.2, "val_loss": 1.6, "val_tokens": 64, "seconds": 0.1},
        _step(5, 2.25, [1, 3, 2, 2], bias=[0.0, 0.1, 0.0, 0.0]),
    ]
    run = analysis.load_run(_write_run(tmp_path / "r", records, tail='{"step": 6, "loss"'))  # half-written last line
    assert run.name == "r" and len(run.steps) == 3 and len(run.events) == 2
    np.testing.assert_array_equal(run.steps["step"], [2, 4, 5])
    np.testing.assert_allclose(run.steps["flops"], [200 * 7e3, 400 * 7e3, 500 * 7e3])  # tokens x FLOPs per token
    np.testing.assert_allclose(run.steps["wall_seconds"], [4.0, 8.0, 10.0])  # each logged step stands for the gap
    assert np.isnan(run.steps["epoch"][0]) and run.steps["epoch"][1] == 0.5  # a key not logged is NaN
    assert run.steps.has_data("epoch") and not run.steps.has_data("data_seen")
    np.testing.assert_array_equal(run.evals["val_bpb"], [2.2])
    np.testing.assert_array_equal(run.evals["tokens"], [400])
    np.testing.assert_array_equal(run.evals["wall_seconds"], [8.0])
    assert run.moe_layers == [1] and run.expert_load.shape == (3, 1, 4)
    np.testing.assert_array_equal(run.expert_load[:, 0, 1], [0, 2, 3])
    np.testing.assert_array_equal(run.dead_experts[:, 0], [1, 0, 0])
    np.testing.assert_allclose(run.expert_bias[0, 0], [0.1, -0.1, 0.0, 0.0])
    assert run.op_profile() is None and run.summary is None and run.checkpoints == []
    table = analysis.runs_table([run])
    assert table.rows()[0] == {"run": "r", "status": "in progress", "params_total": 10, "params_active": 6,
                               "steps": 5, "tokens": 500, "val_bpb": 2.2, "tokens_per_second": 50.0,
                               "mfu": pytest.approx(float("nan"), nan_ok=True), "device": "cpu"}


def test_load_run_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        analysis.load_run(tmp_path)
    bad = _write_run(tmp_path / "bad", [_step(1, 3.0, [1, 1])], tail="not json\n" + json.dumps(_step(2, 2.0, [1, 1])))
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not JSON"):
        analysis.load_run(bad)
    mixed = _write_run(tmp_path / "mixed", [_step(1, 3.0, [1, 1]), _step(2, 2.0, [1, 1, 0])])
    with pytest.raises(ValueError, match="step 2 has expert records of another shape"):
        analysis.load_run(mixed)


def test_newest_run_and_empty_roots(tmp_path, monkeypatch):
    monkeypatch.delenv("NANOWHALE_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert analysis.load_runs(None) == []
    with pytest.raises(ValueError, match="no run directories"):
        analysis.newest_run()
    import os
    import time

    old = _write_run(tmp_path / "runs" / "old", [_step(1, 3.0, [1, 1])])
    new = _write_run(tmp_path / "runs" / "new", [_step(1, 3.0, [1, 1])])
    t = time.time()
    os.utime(old / "metrics.jsonl", (t, t))
    os.utime(new / "metrics.jsonl", (t - 100, t - 100))
    assert analysis.newest_run().name == "old"
    monkeypatch.chdir(tmp_path / "runs")  # from notebooks/, the runs are in ../runs
    assert [r.name for r in analysis.load_runs(None)] == ["old"]
    monkeypatch.setenv("NANOWHALE_RUNS", str(tmp_path / "nowhere"))
    assert analysis.load_runs(None) == []


def test_micro_runs_match_their_summaries(micro_runs):
    a = analysis.load_run(micro_runs / "runs" / "a")
    end = a.summary
    np.testing.assert_array_equal(a.steps["step"], np.arange(1, 9))
    np.testing.assert_array_equal(a.evals["step"], [4, 8])
    assert a.evals["val_bpb"][-1] == end["val_bpb"]
    row = analysis.runs_table([a]).rows()[0]
    assert row["val_bpb"] == end["val_bpb"] and row["steps"] == 8 and row["tokens"] == end["tokens"]
    assert a.expert_load.shape == (8, 2, 4) and a.moe_layers == [1, 2]
    assert np.all(a.expert_load.sum(axis=2) == 256 * 2)  # every token of the step, top_k = 2 slots each
    assert not np.any(np.isnan(a.expert_bias))
    prof = a.op_profile()
    assert a.event("op_profile")["step"] == 2 and "linear_forward" in prof["op"]
    assert np.all(np.diff(prof["seconds"]) <= 0) and prof["fraction"].sum() == pytest.approx(1.0)
    assert [p.name for p in a.checkpoints] == ["step_000008"]


def _routing(experts, scores, ids=None):
    experts = np.asarray(experts)
    M, N, K = experts.shape
    ids = np.arange(N) if ids is None else np.asarray(ids)
    return Routing(ids, [str(i) for i in ids], list(range(1, M + 1)), experts, np.asarray(scores, dtype=float),
                   scores.shape[2])


def test_routing_statistics_by_hand():
    experts = np.array([[[0, 1], [1, 0], [2, 3]]])          # 1 layer, 3 tokens, top-2 of 4
    scores = np.full((1, 3, 4), 0.5)
    scores[0, 2] = [1.0, 0.0, 0.0, 0.0]                     # a router sure of its first expert
    r = _routing(experts, scores, ids=[5, 6, 5])
    np.testing.assert_array_equal(analysis.expert_counts(r), [[2, 2, 1, 1]])
    co = analysis.coselection(r)[0]
    np.testing.assert_array_equal(np.diag(co), [2, 2, 1, 1])
    assert co[0, 1] == co[1, 0] == 2 and co[2, 3] == 1 and co[0, 2] == 0
    h = analysis.router_entropy(r)[0]
    np.testing.assert_allclose(h, [np.log(4), np.log(4), 0.0], atol=1e-9)
    classes = np.zeros(10, dtype=np.int64)
    classes[6] = 3
    spec = analysis.specialisation(r, classes)              # (M, C, E)
    np.testing.assert_allclose(spec[0, 0], [0.25, 0.25, 0.25, 0.25])  # tokens 0 and 2 (id 5): experts 0,1,2,3
    np.testing.assert_allclose(spec[0, 3], [0.5, 0.5, 0, 0])
    assert spec[0, 1].sum() == 0                             # classes that do not occur stay zero
    table = analysis.routing_table(r)
    assert table.rows()[0]["dead_experts"] == 0 and table.rows()[0]["max_load_over_mean"] == pytest.approx(2 / 1.5)


def test_route_text_and_token_classes_of_a_checkpoint(micro_runs):
    model = analysis.load_model(analysis.load_run(micro_runs / "runs" / "a"))
    r = analysis.route_text(model, "the whale 42.\n")
    tok = model.tokenizer
    assert r.ids[0] == tok.special_id("<|bos|>") and list(r.ids[1:]) == list(tok.encode("the whale 42.\n"))
    assert "".join(r.pieces[1:]) == "the whale 42.\n"
    experts, _ = model.model.route(r.ids[None, :])
    np.testing.assert_array_equal(r.experts, experts[:, 0])
    classes = analysis.classify_tokens(tok)
    name = {t: TOKEN_CLASSES[classes[t]] for t in r.ids}
    assert name[tok.special_id("<|bos|>")] == "special"
    assert [name[t] for t in tok.encode(" whale")] == ["word"] * len(tok.encode(" whale"))
    assert all(name[t] == "digit" for t in tok.encode("42"))
    assert name[tok.encode("\n")[0]] == "newline"
    html = analysis.token_html(r, layer=1)
    assert html.count("<span style=\"background:") == len(r.ids) + r.n_experts  # tokens + legend
    assert "&lt;|bos|&gt;" in html
    val = analysis.route_validation(model, rows=2)
    assert val.experts.shape == (2, 2 * model.model.config.seq_len, 2)
    assert analysis.route_text(None, "x") is None and "no checkpoint" in analysis.token_html(None)


def test_table_rendering_and_errors():
    t = analysis.Table({"name": np.array(["a", "b|c"], dtype=object), "x": [3313792.0, np.nan], "y": [0.5, 1e-7]})
    assert t.to_markdown().splitlines() == ["| name | x | y |", "|---|---|---|", "| a | 3313792 | 0.5 |",
                                            "| b\\|c |  | 1e-07 |"]
    assert "<td>b|c</td>" in t._repr_html_()
    assert list(t.sort("x")["name"]) == ["a", "b|c"]  # NaN sorts last
    assert list(t.select(np.array([False, True]))["name"]) == ["b|c"]
    with pytest.raises(KeyError, match="no column 'z'"):
        t["z"]
    with pytest.raises(ValueError, match="differ in length"):
        analysis.Table({"a": [1], "b": [1, 2]})


def test_research_ledger_tables(micro_ledger):
    led = analysis.load_ledger(micro_ledger)  # the current tag only
    assert led.tag == "night1" and led.lower_is_better and led.metric_name == "val_bpb"
    summary = analysis.ledger_summary(led).rows()[0]
    assert (summary["tag"], summary["scale"], summary["k"], summary["baselines"], summary["experiments"],
            summary["promotions"]) == ("night1", "tiny", 2.0, 3, 7, 1)
    older = analysis.load_ledger(micro_ledger, tag="older")
    assert list(older.experiments["description"]) == ["an older session"] and len(older.baselines) == 0
    assert analysis.baseline_mean(led) == pytest.approx(2.01)
    p = analysis.progress_table(led)
    np.testing.assert_allclose(p["hours"], np.arange(7.0))
    np.testing.assert_allclose(p["running_best"], [1.99, 1.99, 1.96, 1.96, 1.96, 1.95, 1.95])
    assert list(p["verdict"]) == ["keep", "discard", "keep", "crash", "inconclusive", "keep", "discard"]
    v = {r["agent"]: r for r in analysis.verdict_table(led).rows()}
    assert (v["a0"]["experiments"], v["a0"]["keep"], v["a0"]["discard"], v["a0"]["inconclusive"]) == (4, 1, 2, 1)
    assert (v["a1"]["keep"], v["a1"]["crash"]) == (2, 1) and v["all"]["experiments"] == 7
    assert v["all"]["keep_rate"] == pytest.approx(3 / 7) and v["a1"]["crash_rate"] == pytest.approx(1 / 3)
    k = analysis.kept_table(led)
    assert list(k["id"]) == [3, 1, 6]  # largest gain first
    np.testing.assert_allclose(k["gain"], [0.03, 0.02, 0.01], atol=1e-12)
    np.testing.assert_allclose(k["gain_over_margin"], [2.5, 2.0, 2.0])
    np.testing.assert_allclose(k["throughput_change_pct"], [100 * (8050 / 8000 - 1), 100 * (8000 / 8100 - 1),
                                                            100 * (8100 / 8050 - 1)])
    t = analysis.promotions_table(led).rows()[0]
    assert (t["from_scale"], t["to_scale"], t["best_mean"], t["verdict"]) == ("tiny", "small", 1.76, "transferred")


def test_ledger_of_a_research_night_in_progress_and_absent(tmp_path, monkeypatch, capsys):
    from nanowhale.research.ledger import Ledger

    monkeypatch.delenv("NANOWHALE_LEDGER", raising=False)
    monkeypatch.chdir(tmp_path)
    assert analysis.load_ledger() is None and "no ledger yet" in capsys.readouterr().out
    assert analysis.kept_table(None).startswith("no ledger yet")
    led = Ledger.open(tmp_path / "research" / "night.sqlite")  # just initialised: no rows, no settings
    led.set(**{"tag/t": {"direction": "higher", "metric": "reward"}, "current": "t"})
    view = analysis.load_ledger()
    assert view.path.name == "night.sqlite" and view.tag == "t"
    assert not view.lower_is_better and view.metric_name == "reward"
    assert len(analysis.progress_table(view)) == 0 and len(analysis.kept_table(view)) == 0
    led.insert("experiments", {"agent": "a", "tag": "t", "started_at": 0.0, "base_commit": "b", "description": "x",
                               "scale": "tiny", "budget": "steps:1", "seeds": [0], "metric_name": "reward",
                               "direction": "higher", "metric_mean": 0.5, "best_metric": 0.4, "status": "done",
                               "verdict": "keep"})  # higher is better: gain = mean - best
    view = analysis.load_ledger(tmp_path / "research")
    assert analysis.kept_table(view)["gain"][0] == pytest.approx(0.1)
    np.testing.assert_allclose(analysis.progress_table(view)["running_best"], [0.5])
    assert analysis.progress_table(view)["verdict"][0] == "running"  # no finished_at yet


def test_posttraining_lineage_tables(micro_lineage, monkeypatch, capsys):
    from nanowhale.posttrain.sampling import answer

    monkeypatch.delenv("NANOWHALE_RUNS", raising=False)
    monkeypatch.chdir(micro_lineage)
    chain = analysis.lineage_runs()  # the newest post-trained run (rl), and its parents
    assert [r.name for r in chain] == ["base", "sft", "dpo", "rl"]
    assert [analysis.stage_of(r) for r in chain] == ["base", "sft", "dpo", "rl"]
    rows = analysis.lineage_table(chain).rows()
    assert [(r["run"], r["stage"], r["step"]) for r in rows] == [("base", "base", 8), ("sft", "sft", 4),
                                                                 ("dpo", "dpo", 3), ("rl", "rl", 3)]
    assert rows[0]["val_bpb"] == chain[0].summary["val_bpb"]
    assert rows[3]["reward"] == [e for e in chain[3].events if e.get("event") == "eval"][-1]["val_reward"]

    records = [json.loads(line) for line in (chain[1].dir / "metrics.jsonl").read_text().splitlines()]
    sft = analysis.stage_metrics(chain[1])
    assert sft.names[:3] == ["step", "loss", "val_loss"]  # the learning signals first
    assert "lr_mult" not in sft and "tok_per_s" not in sft and "supervised_tokens" not in sft
    logged = {r["step"]: r["loss"] for r in records if "event" not in r}
    np.testing.assert_array_equal(sft["loss"][np.isin(sft["step"], list(logged))], list(logged.values()))
    val = [(r["step"], r["val_loss"]) for r in records if r.get("event") == "eval"]
    assert [(s, sft["val_loss"][list(sft["step"]).index(s)]) for s, _ in val] == val  # at the start and the end
    dpo, rl = analysis.stage_metrics(chain[2]), analysis.stage_metrics(chain[3])
    assert dpo.names[1:4] == ["loss", "val_loss", "reward_accuracy"] and "margin" in dpo
    assert {"reward_mean", "pass_at_k", "val_reward", "kl"} <= set(rl.names)
    assert np.all(np.isnan(rl["reward_mean"]) | ((rl["reward_mean"] >= 0) & (rl["reward_mean"] <= 1)))

    samples = analysis.stage_samples(chain[1]).rows()[0]
    first = next(r for r in records if r.get("event") == "eval")["samples"][0]
    assert samples["prompt"] == first["prompt"] and samples["step 0"] == first["reply"] and "step 4" in samples
    assert "gold" in analysis.stage_samples(chain[3]).names  # RL samples carry the verifier's answer

    table = analysis.compare_samples(chain, ["add 2 and 3"], max_new_tokens=4)
    assert table.names == ["prompt", "base: base", "sft: sft", "dpo: dpo", "rl: rl"]
    sft_model = nw.load(chain[1].dir, device="cpu")
    assert table["sft: sft"][0] == answer(sft_model.model, sft_model.tokenizer,
                                          [{"role": "user", "content": "add 2 and 3"}], 4)
    assert chain[1].expert_load.shape[0] == 0  # post-training logs the balance only, not the load

    monkeypatch.chdir(micro_lineage / "runs" / "base")
    assert analysis.lineage_runs() == [] and "no lineage yet" in capsys.readouterr().out
    assert analysis.lineage_table([]).startswith("no lineage yet")


def test_task_table_from_eval_results(micro_runs, tmp_path):
    import shutil

    from nanowhale.tasks.runner import save_results

    run_dir = tmp_path / "a"
    shutil.copytree(micro_runs / "runs" / "a", run_dir)
    run = analysis.load_run(run_dir)
    assert analysis.task_table([run]).startswith("no task evaluations yet")
    piqa = {"acc": 0.6, "acc_stderr": 0.02, "acc_norm": 0.55, "acc_norm_stderr": 0.03, "chance": 0.5, "n": 100,
            "shots": 0, "primary": "acc_norm"}
    gsm = {"acc": 0.1, "acc_stderr": 0.01, "chance": 0.0, "n": 50, "shots": 4, "primary": "acc"}
    save_results(run_dir, "ck8", 8, {"tasks": {"piqa": piqa}})
    save_results(run_dir, "ck4", 4, {"tasks": {"gsm8k": gsm}})
    rows = analysis.task_table([run]).rows()
    assert [(r["step"], r["task"], r["metric"], r["value"], r["stderr"]) for r in rows] == [
        (4, "gsm8k", "acc", 0.1, 0.01), (8, "piqa", "acc_norm", 0.55, 0.03)]
    assert rows[1]["chance"] == 0.5 and rows[0]["shots"] == 4 and rows[0]["run"] == "a"
    (run_dir / "eval_tasks.json").write_text("{}")
    with pytest.raises(ValueError, match="eval_tasks.json: not an eval_tasks.json file"):
        analysis.task_table([run])
