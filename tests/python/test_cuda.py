"""CUDA backend against the CPU oracle, at the model level. These tests skip without a GPU, except
that NANOWHALE_REQUIRE_CUDA=1 turns a missing or unusable GPU into a failure."""

import os

import numpy as np
import pytest

import nanowhale as nw
from conftest import micro_config, random_batch

REQUIRED = os.environ.get("NANOWHALE_REQUIRE_CUDA") == "1"
needs_cuda = pytest.mark.skipif(not nw.cuda_available() and not REQUIRED, reason="no CUDA device")


def test_cuda_required_means_cuda_works():
    if REQUIRED:
        assert nw.cuda_available(), "NANOWHALE_REQUIRE_CUDA=1 but no usable CUDA device (or a CPU-only build)"
    elif not nw.cuda_available():
        pytest.skip("no CUDA device")


def pair(cfg, seed=0):
    return nw.Model(cfg, seed=seed, device="cpu"), nw.Model(cfg, seed=seed, device="cuda")


@needs_cuda
def test_cuda_loss_and_every_gradient_match_cpu():
    cfg = micro_config()
    cpu, gpu = pair(cfg)
    rng = np.random.default_rng(0)
    for name in cpu.parameter_names():  # random weights: zero-initialised projections hide terms
        value = rng.normal(0, 0.3, size=cpu.get_param(name).shape)
        cpu.set_param(name, value)
        gpu.set_param(name, value)
    tokens, targets = random_batch(cfg, 2, 12, seed=1, ignore_fraction=0.1)
    l_cpu = cpu.forward_backward(tokens, targets)
    l_gpu = gpu.forward_backward(tokens, targets)
    assert abs(l_cpu - l_gpu) <= 1e-5 * abs(l_cpu)
    assert abs(cpu.last_balance_loss - gpu.last_balance_loss) <= 1e-5 * abs(cpu.last_balance_loss)
    for name in cpu.parameter_names():
        g_cpu, g_gpu = cpu.get_grad(name), gpu.get_grad(name)
        assert np.all(np.isfinite(g_gpu)), name
        np.testing.assert_allclose(g_gpu, g_cpu, rtol=0, atol=1e-4 * (np.abs(g_cpu).max() + 1e-12), err_msg=name)
    assert [s["tokens_per_expert"] for s in cpu.routing_stats()] == [s["tokens_per_expert"] for s in gpu.routing_stats()]


@needs_cuda
def test_cuda_training_trajectory_matches_cpu():
    cfg = micro_config()
    cpu, gpu = pair(cfg)
    opt_cpu, opt_gpu = nw.Optimizer(cpu), nw.Optimizer(gpu)
    tokens, targets = random_batch(cfg, 4, 16, seed=2)
    for step in range(20):
        l_cpu = cpu.forward_backward(tokens, targets)
        l_gpu = gpu.forward_backward(tokens, targets)
        assert abs(l_cpu - l_gpu) <= 2e-3 * abs(l_cpu), (step, l_cpu, l_gpu)
        opt_cpu.step()
        opt_gpu.step()
        cpu.zero_grad()
        gpu.zero_grad()


@needs_cuda
def test_cuda_deferred_losses_match_cpu():
    """The deferred path on the GPU: staged batches and scalars, the losses summed on the device."""
    cfg = micro_config()
    cpu, gpu = pair(cfg)
    gpu_returned = nw.Model(cfg, seed=0, device="cuda")
    rng = np.random.default_rng(9)
    batches = [(*random_batch(cfg, 2, 12, seed=10 + i, ignore_fraction=0.2),
                rng.normal(0, 0.1, size=(2, 12)) if i == 2 else None) for i in range(4)]
    loss_sum = balance_sum = gpu_loss_sum = 0.0
    for tokens, targets, weights in batches:
        loss_sum += cpu.forward_backward(tokens, targets, weights=weights, grad_scale=0.25)
        balance_sum += cpu.last_balance_loss
        gpu_loss_sum += gpu_returned.forward_backward(tokens, targets, weights=weights, grad_scale=0.25)
        assert gpu.forward_backward(tokens, targets, weights=weights, grad_scale=0.25, defer_loss=True) is None
    loss, balance = gpu.take_loss_sums()
    assert loss == gpu_loss_sum  # deferred and returned add the same device values in the same order
    assert abs(loss - loss_sum) <= 1e-5 * abs(loss_sum)
    assert abs(balance - balance_sum) <= 1e-5 * abs(balance_sum)
    assert gpu.take_loss_sums() == (0.0, 0.0)
    for name in cpu.parameter_names():
        g_cpu = cpu.get_grad(name)
        np.testing.assert_array_equal(gpu.get_grad(name), gpu_returned.get_grad(name), err_msg=name)
        np.testing.assert_allclose(gpu.get_grad(name), g_cpu, rtol=0, atol=1e-4 * (np.abs(g_cpu).max() + 1e-12),
                                   err_msg=name)


def cuda_losses(cfg, tokens, targets, precision="fp32", steps=5):
    model = nw.Model(cfg, seed=0, device="cuda")
    model.precision = precision
    opt = nw.Optimizer(model)
    losses = []
    for _ in range(steps):
        losses.append(model.forward_backward(tokens, targets))
        opt.step()
        model.zero_grad()
    return losses


@needs_cuda
def test_cuda_same_seed_same_loss_bits():
    cfg = micro_config()
    tokens, targets = random_batch(cfg, 4, 16, seed=3)
    assert cuda_losses(cfg, tokens, targets) == cuda_losses(cfg, tokens, targets)


@needs_cuda
def test_cuda_cached_decoding_matches_full_forward():
    cfg = micro_config()
    model = nw.Model(cfg, seed=0, device="cuda")
    tokens, _ = random_batch(cfg, 2, 10, seed=4)
    full = model.logits(tokens)
    cache = model.new_kv_cache(batch=2)
    cached = np.concatenate([model.decode(tokens[:, :4], cache)] +
                            [model.decode(tokens[:, t:t + 1], cache) for t in range(4, 10)], axis=1)
    np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("head_dim, seq", [(8, 12), (64, 70)])
def test_cuda_bf16_matches_the_cpu_emulation_and_repeats_bits(head_dim, seq):
    """bf16 on the GPU against the CPU's bf16 emulation: the same bf16 operands, float32 accumulation in
    a different order, and attention probabilities rounded at different points (running vs normalised),
    so they agree to bf16 accuracy (u = 2^-8), not to float32's. Two GPU runs give the same bits.
    Head dim 8 runs attention on the float32 kernels, 64 on the tensor-core ones (70 positions: two
    64-row tiles, the second partial; window 3 and full causal layers)."""
    cfg = micro_config(head_dim=head_dim, seq_len=seq)
    cpu, gpu = pair(cfg)
    cpu.precision = gpu.precision = "bf16"
    rng = np.random.default_rng(0)
    for name in cpu.parameter_names():
        value = rng.normal(0, 0.3, size=cpu.get_param(name).shape)
        cpu.set_param(name, value)
        gpu.set_param(name, value)
    tokens, targets = random_batch(cfg, 2, seq, seed=1)
    l_cpu = cpu.forward_backward(tokens, targets)
    l_gpu = gpu.forward_backward(tokens, targets)
    assert abs(l_cpu - l_gpu) <= 2 ** -8 * abs(l_cpu)
    for name in cpu.parameter_names():
        g_cpu, g_gpu = cpu.get_grad(name), gpu.get_grad(name)
        np.testing.assert_allclose(g_gpu, g_cpu, rtol=0, atol=2 ** -6 * (np.abs(g_cpu).max() + 1e-12), err_msg=name)
    assert cuda_losses(cfg, tokens, targets, "bf16") == cuda_losses(cfg, tokens, targets, "bf16")


@needs_cuda
def test_cuda_clipped_step_matches_cpu():
    """The GPU decides clipping on the device: with a limit far below the norm every step clips, and the
    parameters after a few steps agree with the CPU's host-side decision."""
    cfg = micro_config()
    cpu, gpu = pair(cfg)
    oc = nw.OptimizerConfig()
    oc.grad_clip = 1e-3
    opt_cpu, opt_gpu = nw.Optimizer(cpu, oc), nw.Optimizer(gpu, oc)
    tokens, targets = random_batch(cfg, 4, 16, seed=5)
    for _ in range(3):
        cpu.forward_backward(tokens, targets)
        gpu.forward_backward(tokens, targets)
        n_cpu, n_gpu = opt_cpu.step(), opt_gpu.step()
        assert n_cpu > 100 * oc.grad_clip
        assert abs(n_cpu - n_gpu) <= 1e-4 * n_cpu
        cpu.zero_grad()
        gpu.zero_grad()
    assert opt_gpu.steps == opt_cpu.steps == 3
    for name in cpu.parameter_names():
        p_cpu = cpu.get_param(name)
        np.testing.assert_allclose(gpu.get_param(name), p_cpu, rtol=0, atol=1e-4 * (np.abs(p_cpu).max() + 1e-12),
                                   err_msg=name)


@needs_cuda
def test_cuda_non_finite_norm_skips_the_step_on_the_device():
    """A non-finite gradient norm leaves every parameter, optimizer state and the step count as they were
    (decided on the device; the step's one read returns the norm); the next finite step applies."""
    cfg = micro_config()
    model = nw.Model(cfg, seed=0, device="cuda")
    opt = nw.Optimizer(model)
    tokens, targets = random_batch(cfg, 2, 12, seed=6)
    model.forward_backward(tokens, targets)
    assert np.isfinite(opt.step())
    model.zero_grad()
    emb = model.parameter_names()[0]
    poisoned = model.get_param(emb)
    poisoned[tokens[0, 0]] = np.nan
    model.set_param(emb, poisoned)
    params = {n: model.get_param(n) for n in model.parameter_names()}
    states = {(w, n): opt.get_state(w, n) for w in ("exp_avg", "exp_avg_sq") for n in model.parameter_names()}
    model.forward_backward(tokens, targets)
    assert not np.isfinite(opt.step())
    assert opt.steps == 1
    for n, p in params.items():
        np.testing.assert_array_equal(model.get_param(n), p, err_msg=n)
    for (w, n), s in states.items():
        np.testing.assert_array_equal(opt.get_state(w, n), s, err_msg=f"{w} {n}")
    model.zero_grad()
    healed = model.get_param(emb)
    healed[tokens[0, 0]] = 0.0
    model.set_param(emb, healed)
    model.forward_backward(tokens, targets)
    assert np.isfinite(opt.step())
    assert opt.steps == 2
    assert not np.array_equal(model.get_param(emb), healed)


def graphed_run(cfg, batches, precision, graphs):
    """Three steps of two micro-batches each, with changing schedules; returns what each step read back,
    the final parameters and optimizer states, and the model's and optimizer's graph counts."""
    model = nw.Model(cfg, seed=0, device="cuda")
    model.precision = precision
    model.cuda_graphs = graphs
    opt = nw.Optimizer(model)
    reads = []
    for step in range(len(batches) // 2):
        for tokens, targets in batches[2 * step:2 * step + 2]:
            assert model.forward_backward(tokens, targets, grad_scale=0.5, defer_loss=True) is None
        norm = opt.step(lr_mult=1.0 - 0.1 * step, wd_mult=1.0 - 0.05 * step, muon_momentum=0.85 + 0.02 * step,
                        balance_gamma=0.01 * (step % 3))
        reads.append((norm, *model.take_loss_sums()))
        model.zero_grad()
    params = {n: model.get_param(n) for n in model.parameter_names()}
    states = {(w, n): opt.get_state(w, n) for w in ("exp_avg", "exp_avg_sq") for n in model.parameter_names()}
    bias = [s["bias"] for s in model.routing_stats()]
    return reads, params, states, bias, model.cuda_graph_stats(), opt.cuda_graph_stats(), opt.steps


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_replays_give_the_eager_steps_bits(precision):
    """Steps replayed as CUDA graphs compute exactly what eager steps do: the per-call values (loss scale
    from each batch's target count, learning rates, momentum, balance gamma, Adam's step) come from device
    memory, not from the captured launch."""
    cfg = micro_config()
    batches = [random_batch(cfg, 2, 12, seed=20 + i, ignore_fraction=0.1 * (i % 3)) for i in range(12)]
    eager = graphed_run(cfg, batches, precision, graphs=False)
    graphed = graphed_run(cfg, batches, precision, graphs=True)
    assert graphed[0] == eager[0]  # norms and loss sums, bit for bit
    for n, p in eager[1].items():
        np.testing.assert_array_equal(graphed[1][n], p, err_msg=n)
    for k, s in eager[2].items():
        np.testing.assert_array_equal(graphed[2][k], s, err_msg=str(k))
    assert graphed[3] == eager[3] and graphed[6] == eager[6] == 6
    fb, up = graphed[4], graphed[5]
    assert fb["failure"] == "" and up["failure"] == "", (fb, up)
    # 12 micro-batches: eager, captured, then replayed (captured again if the first update's scratch moved
    # the step workspace); 6 updates: eager, captured, then replayed
    assert 1 <= fb["captures"] <= 2 and fb["replays"] >= 8, fb
    assert up["captures"] == 1 and up["replays"] >= 4, up
    assert eager[4]["replays"] == eager[5]["replays"] == 0


def run_with_moves(cfg, graphs, device="cuda"):
    """Eight steps with calls between them that a graph must follow: an evaluation at a larger batch (the
    activations' block is allocated again, elsewhere), a change of precision (other launches in both graphs),
    a parameter written from the host, and a weighted micro-batch. Returns what each step read back, the
    evaluation's loss, the final parameters and the model's and optimizer's graph counts."""
    model = nw.Model(cfg, seed=0, device=device)
    model.cuda_graphs = graphs
    opt = nw.Optimizer(model)
    big = random_batch(cfg, 6, cfg.seq_len, seed=99)
    reads = []
    for step in range(8):
        tokens, targets = random_batch(cfg, 2, 12, seed=40 + step, ignore_fraction=0.1)
        weights = np.linspace(0.5, 1.5, tokens.size, dtype=np.float32).reshape(tokens.shape) if step == 7 else None
        model.forward_backward(tokens, targets, weights=weights, grad_scale=0.5, defer_loss=True)
        reads.append((opt.step(lr_mult=1.0 - 0.05 * step), *model.take_loss_sums()))
        model.zero_grad()
        if step == 2:
            reads.append(model.forward(*big))
        elif step == 4:
            model.precision = "bf16"
        elif step == 5:
            model.set_param("embed", model.get_param("embed") * 0.5)
    params = {n: model.get_param(n) for n in model.parameter_names()}
    return reads, params, model.cuda_graph_stats(), opt.cuda_graph_stats()


@needs_cuda
def test_cuda_graphs_follow_what_moves_between_steps():
    """A graph holds addresses and launch shapes: after a call that moves a buffer or changes the launches,
    the next step runs eagerly and is captured again, never replayed stale, and every step gives the eager
    run's bits."""
    cfg = micro_config()
    eager = run_with_moves(cfg, graphs=False)
    graphed = run_with_moves(cfg, graphs=True)
    assert graphed[0] == eager[0]
    for n, p in eager[1].items():
        np.testing.assert_array_equal(graphed[1][n], p, err_msg=n)
    fb, up = graphed[2], graphed[3]
    assert fb["failure"] == "" and up["failure"] == "", (fb, up)
    # forward_backward: captured at step 1, again after the evaluation's new block and after bf16 (at least)
    assert fb["captures"] >= 3 and fb["replays"] >= 3, fb
    # the update: captured at step 1 and again after bf16 (Muon's Newton-Schulz launches change)
    assert up["captures"] >= 2 and up["replays"] >= 5, up


@needs_cuda
def test_cuda_training_with_graphs_matches_training_without(micro_data, tmp_path):
    from nanowhale.trainer import format_summary
    from train_fixtures import micro_run_config
    data, vocab = micro_data
    results = {}
    for mode in ("on", "off"):
        results[mode] = nw.train(micro_run_config(data, tmp_path / mode, vocab, train={
            "steps": 8, "device": "cuda", "cuda_graph": mode}), progress=False)
    on, off = results["on"], results["off"]
    assert on["losses"] == off["losses"] and on["val_bpb"] == off["val_bpb"]
    assert off["cuda_graph"] == "off"
    assert on["cuda_graph"].startswith("on (") and int(on["cuda_graph"].split()[1].strip("(")) > 0, on["cuda_graph"]
    assert "cuda_graph: on (" in format_summary(on)
