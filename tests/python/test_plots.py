"""nanowhale.plots: each figure draws the numbers of the analysis tables, with its labels; panels without
data say so."""

import numpy as np
import pytest

from nanowhale import analysis, cli, plots


@pytest.fixture(scope="module")
def runs(micro_runs):
    return analysis.load_runs([micro_runs / "runs" / "a", micro_runs / "runs" / "b"])


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_loss_figure_draws_each_run_against_tokens_flops_and_seconds(runs):
    a, b = runs
    axes = np.array(plots.loss_figure(runs).axes).reshape(2, 3)
    assert [ax.get_xlabel() for ax in axes[0]] == ["tokens", "FLOPs (6·N_active·tokens + attention)",
                                                   "seconds of training steps"]
    assert axes[0, 0].get_ylabel() == "train loss (nats)" and axes[1, 0].get_ylabel() == "val_bpb"
    for col, x in enumerate(("tokens", "flops", "wall_seconds")):
        loss_a, loss_b = axes[0, col].lines
        assert loss_a.get_label() == "a" and loss_b.get_label() == "b"
        np.testing.assert_array_equal(loss_a.get_xdata(), a.steps[x])
        np.testing.assert_array_equal(loss_b.get_ydata(), b.steps["loss"])
        val_a, val_b = axes[1, col].lines
        np.testing.assert_array_equal(val_a.get_ydata(), a.evals["val_bpb"])
        assert len(val_a.get_ydata()) == 2 and len(val_b.get_ydata()) == 1  # b evaluates only at its end
    assert [t.get_text() for t in axes[0, 0].get_legend().get_texts()] == ["a", "b"]


def test_throughput_schedules_grad_norm(runs):
    a = runs[0]
    tput, mfu = plots.throughput_figure(runs).axes
    np.testing.assert_array_equal(tput.lines[0].get_ydata(), a.steps["tok_per_s"])
    np.testing.assert_allclose(mfu.lines[0].get_ydata(), 100 * a.steps["mfu"])
    assert mfu.get_ylabel() == "MFU (%)"
    lr, mom, gamma, epoch = plots.schedules_figure(runs).axes
    np.testing.assert_array_equal(lr.lines[0].get_ydata(), a.steps["lr_mult"])
    np.testing.assert_array_equal(gamma.lines[1].get_ydata(), runs[1].steps["balance_gamma"])
    np.testing.assert_array_equal(epoch.lines[0].get_ydata(), a.steps["epoch"])
    assert a.steps["epoch"][-1] > a.steps["epoch"][0] > 0
    old_run = analysis.Run(a.dir, {}, a.steps.select(np.zeros(len(a.steps), dtype=bool)), a.evals, [], [],
                           a.expert_steps, a.expert_load, a.expert_bias, a.max_violation, a.dead_experts)
    assert _texts(plots.schedules_figure([old_run]).axes[3]) == ["epoch: not logged by this run"]
    (g,) = plots.grad_norm_figure(runs).axes
    assert g.get_yscale() == "log"
    np.testing.assert_array_equal(g.lines[0].get_ydata(), a.steps["grad_norm"])


def test_op_profile_figure_bars_are_the_profile(runs):
    a = runs[0]
    prof = a.op_profile()
    (ax,) = plots.op_profile_figure(a, top=5).axes
    widths = [p.get_width() for p in ax.patches]
    np.testing.assert_allclose(widths[:5], prof["seconds"][:5] * 1e3)
    assert widths[5] == pytest.approx(prof["seconds"][5:].sum() * 1e3)
    assert [t.get_text() for t in ax.get_yticklabels()] == [*prof["op"][:5], "other"]
    assert list(ax.get_yticks()) == [5, 4, 3, 2, 1, 0]  # the slowest op at the top
    assert ax.get_title().startswith("a: step 2")
    empty = analysis.Run(a.dir, {}, a.steps, a.evals, [], [], a.expert_steps[:0], a.expert_load[:0],
                         a.expert_bias[:0], a.max_violation[:0], a.dead_experts[:0])
    assert "no op profile" in _texts(plots.op_profile_figure(empty).axes[0])[0]
    assert "no expert load" in _texts(plots.expert_load_figure(empty).axes[0])[0]
    assert "no run yet" in _texts(plots.bias_figure(None).axes[0])[0]


def test_expert_load_balance_and_bias_figures(runs):
    a = runs[0]
    fig = plots.expert_load_figure(a)
    heat = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in heat] == ["layer 1", "layer 2"]
    rel = a.expert_load[:, 1, :] / a.expert_load[:, 1, :].mean(axis=1, keepdims=True)
    np.testing.assert_allclose(heat[1].images[0].get_array(), rel.T)  # experts by steps
    assert fig.axes[-1].get_ylabel() == "load / mean load"  # the colour bar
    viol, dead = plots.balance_figure(a).axes
    np.testing.assert_array_equal(viol.lines[1].get_ydata(), a.max_violation[:, 1])
    np.testing.assert_array_equal(dead.lines[0].get_ydata(), a.dead_experts[:, 0])
    bias_axes = plots.bias_figure(a).axes
    assert len(bias_axes[0].lines) == 4  # one line per expert
    np.testing.assert_array_equal(bias_axes[1].lines[3].get_ydata(), a.expert_bias[:, 1, 3])


def test_checkpoint_routing_figures(runs):
    model = analysis.load_model(runs[0])
    r = analysis.route_validation(model, rows=2)
    co = analysis.coselection(r) / len(r.ids)
    cos_axes = [ax for ax in plots.coselection_figure(r).axes if ax.images]
    img = cos_axes[0].images[0].get_array()
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_array_equal(np.ma.getmaskarray(img), ~off)  # the diagonal is blank
    np.testing.assert_allclose(img.data[off], co[0][off])
    ent = plots.entropy_figure(r).axes
    h = analysis.router_entropy(r) / np.log(4)
    assert sum(p.get_height() for p in ent[1].patches) == len(r.ids)  # a histogram over every token
    assert ent[1].get_legend().get_texts()[0].get_text() == f"mean {h[1].mean():.3f}"
    classes = analysis.classify_tokens(model.tokenizer)
    spec_axes = [ax for ax in plots.specialisation_figure(r, classes).axes if ax.images]
    rows = spec_axes[0].images[0].get_array()
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)  # only classes that occur are shown
    shown = [t.get_text() for t in spec_axes[0].get_yticklabels()]  # each class with its token count
    present, counts = np.unique(classes[r.ids], return_counts=True)
    assert shown == [f"{analysis.TOKEN_CLASSES[c]} ({n})" for c, n in zip(present, counts)]
    assert "no checkpoint yet" in _texts(plots.coselection_figure(None).axes[0])[0]


def test_plot_command_writes_pngs(micro_runs, tmp_path, capsys, monkeypatch):
    a, b = micro_runs / "runs" / "a", micro_runs / "runs" / "b"
    assert cli.main(["plot", str(a), str(b), "--out", str(tmp_path / "figs"), "--dpi", "30"]) == 0
    written = capsys.readouterr().out.split()
    names = {p.rsplit("/", 1)[1] for p in written}
    assert {"loss.png", "throughput.png", "schedules.png", "grad_norm.png", "a-op_profile.png",
            "b-expert_load.png", "b-balance.png", "a-bias.png"} <= names
    for p in written:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    monkeypatch.delenv("NANOWHALE_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plot"]) == 2
    assert "no run directories" in capsys.readouterr().err
    monkeypatch.chdir(micro_runs)
    newest = analysis.newest_run()
    assert cli.main(["plot", "--dpi", "30"]) == 0  # the newest run, into RUN/plots
    assert (newest / "plots" / "expert_load.png").exists() and (newest / "plots" / "loss.png").exists()


def test_research_figures(micro_ledger):
    led = analysis.load_ledger(micro_ledger)
    p = analysis.progress_table(led)
    (ax,) = plots.research_progress_figure(led).axes
    best = ax.lines[-1]
    np.testing.assert_allclose(best.get_ydata(), [2.01, *p["running_best"]])  # from the baseline's mean
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"keep (3)", "discard (2)", "crash (1)", "agent a0", "agent a1", "running best"} <= set(labels)
    crash = next(c for c in ax.collections if c.get_label() == "crash (1)")
    assert crash.get_offsets()[0][1] == pytest.approx(1.995)  # a crash sits on the top edge of the metrics
    (vax,) = plots.verdict_figure(led).axes
    keep_bars = [b.get_height() for b in vax.containers[0]]
    assert keep_bars == [1, 2, 3] and [t.get_text() for t in vax.get_xticklabels()] == ["a0", "a1", "all"]
    (kax,) = plots.kept_figure(led).axes
    np.testing.assert_allclose([b.get_width() for b in kax.patches], [0.03, 0.02, 0.01], atol=1e-12)
    np.testing.assert_allclose(kax.collections[0].get_offsets()[:, 0], [0.012, 0.01, 0.005])
    assert kax.get_yticklabels()[0].get_text() == "#3 qk-norm scale"
    (tax,) = plots.time_control_figure(led).axes
    assert sum(len(c.get_offsets()) for c in tax.collections) == 6  # finished experiments with a throughput
    (trx,) = plots.transfer_figure(led).axes
    assert [b.get_height() for b in trx.patches] == [1.80, 1.76]
    assert trx.get_xticklabels()[0].get_text() == "tiny→small\ntransferred"
    assert "no ledger yet" in _texts(plots.research_progress_figure(None).axes[0])[0]


def test_posttraining_figure(micro_lineage):
    chain = analysis.lineage_runs(micro_lineage / "runs" / "rl")
    axes = [ax for ax in plots.posttraining_figure(chain, max_panels=3).axes if ax.lines]
    want = [f"{analysis.stage_of(r)} ({r.name}): {k}" for r in chain[1:]
            for k in analysis.stage_metrics(r).names[1:4]]
    assert [ax.get_title() for ax in axes] == want  # a row per stage, its first three metrics
    dpo = analysis.stage_metrics(chain[2])
    acc = axes[want.index("dpo (dpo): reward_accuracy")].lines[0]
    ok = ~np.isnan(dpo["reward_accuracy"])
    np.testing.assert_array_equal(acc.get_xdata(), dpo["step"][ok])
    np.testing.assert_array_equal(acc.get_ydata(), dpo["reward_accuracy"][ok])
    assert "no post-training stage yet" in _texts(plots.posttraining_figure(chain[:1]).axes[0])[0]
    assert "no lineage yet" in _texts(plots.posttraining_figure([]).axes[0])[0]


def test_research_plot_command(micro_ledger, tmp_path, capsys):
    assert cli.main(["research", "plot", str(micro_ledger), "--out", str(tmp_path), "--dpi", "40"]) == 0
    written = capsys.readouterr().out.split()
    assert sorted(p.rsplit("/", 1)[1] for p in written) == ["kept.png", "progress.png", "time_control.png",
                                                            "transfer.png", "verdicts.png"]
    assert all(open(p, "rb").read(4) == b"\x89PNG" for p in written)
    assert cli.main(["research", "plot", str(tmp_path / "empty")]) == 2
    assert "no research ledger" in capsys.readouterr().err
