"""Shared fixtures: tiny configurations that run in milliseconds on a CPU."""

import numpy as np
import pytest

import nanowhale as nw


def micro_config(**overrides):
    """A model small enough for float64 finite differences: every code path, few parameters."""
    base = dict(
        vocab_size=37, seq_len=16, d_model=16, n_layer=3, n_head=2, n_kv_head=1, head_dim=8,
        n_dense_layers=1, dense_hidden=24, n_experts=4, top_k=2, expert_hidden=8, n_shared=1,
        shared_hidden=8, window_pattern="SL", short_window=3, balance_alpha=0.05,
    )
    base.update(overrides)
    return nw.ModelConfig(**base)


def random_batch(cfg, batch, seq, seed=0, ignore_fraction=0.0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab_size, size=(batch, seq), dtype=np.int64)
    targets = rng.integers(0, cfg.vocab_size, size=(batch, seq), dtype=np.int64)
    if ignore_fraction:
        targets[rng.random(targets.shape) < ignore_fraction] = -1
    return tokens, targets


@pytest.fixture
def tiny_cfg():
    return micro_config()


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory):
    """(data dir, tokenizer vocab size) of a micro corpus prepared once per session (train_fixtures.py)."""
    from nanowhale.data.tokenizer import Tokenizer
    from train_fixtures import prepare_micro_data

    d = prepare_micro_data(tmp_path_factory.mktemp("micro"))
    return d, Tokenizer.load(str(d / "tokenizer.nwtok")).vocab_size


@pytest.fixture(scope="session")
def micro_run(micro_data, tmp_path_factory):
    """A run directory with a micro model trained a few steps (seq_len 128: room for prompts and answers)."""
    from train_fixtures import micro_run_config

    data, vocab = micro_data
    d = tmp_path_factory.mktemp("micro_run") / "run"
    cfg = micro_run_config(data, d, vocab, model={"seq_len": 128}, eval={"tokens": 512},
                           train={"steps": 4, "batch_tokens": 512, "micro_batch": 4})
    nw.train(cfg, progress=False)
    return d


@pytest.fixture(scope="session")
def micro_runs(tmp_path_factory, micro_data):
    """Two finished micro runs under ROOT/runs (seconds): 'a' (8 steps, evals every 4) and 'b' (6 steps,
    another learning rate), trained on the micro corpus. Returns ROOT (notebooks execute there)."""
    from train_fixtures import micro_run_config

    data, vocab = micro_data
    root = tmp_path_factory.mktemp("analysis")
    model = dict(n_layer=3, n_dense_layers=1)  # two MoE layers
    nw.train(micro_run_config(data, root / "runs" / "a", vocab, model=model, eval=dict(every=4)), progress=False,
             log=lambda *a: None)
    nw.train(micro_run_config(data, root / "runs" / "b", vocab, model=model, train=dict(steps=6),
                              optim=dict(muon_lr=0.01)), progress=False, log=lambda *a: None)
    return root


@pytest.fixture(scope="session")
def micro_ledger(micro_runs):
    """ROOT/research/ledger.sqlite beside the micro runs: research_fixtures.py's ledger with known numbers."""
    from research_fixtures import write_ledger

    (micro_runs / "research").mkdir(exist_ok=True)
    return write_ledger(micro_runs / "research" / "ledger.sqlite")


@pytest.fixture(scope="session")
def micro_lineage(tmp_path_factory, micro_base):
    """ROOT/runs/{base, sft, dpo, rl}: a real post-training lineage of the micro base (seconds): SFT on toy
    additions, DPO on a toy preference, RL on arith:3; each stage evaluates at its start and end. Returns ROOT."""
    import json
    import shutil

    from nanowhale.posttrain.dpo import DPOSettings, dpo
    from nanowhale.posttrain.rl import RLSettings, rl
    from nanowhale.posttrain.sft import SFTSettings, sft

    root = tmp_path_factory.mktemp("lineage")
    runs = root / "runs"
    shutil.copytree(micro_base, runs / "base")
    chats, pairs = root / "chats.jsonl", root / "pairs.jsonl"
    with open(chats, "w") as f:
        for i in range(40):
            a, b = i % 7, (3 * i) % 5
            f.write(json.dumps({"messages": [{"role": "user", "content": f"add {a} and {b}"},
                                             {"role": "assistant", "content": f"{a + b}"}]}) + "\n")
    with open(pairs, "w") as f:
        for i in range(24):
            q = f"\n\nHuman: tell me about whales {i}"
            f.write(json.dumps({"chosen": q + "\n\nAssistant: the whale swims deep",
                                "rejected": q + "\n\nAssistant: light falls in long lines"}) + "\n")
    quiet = dict(log=lambda *a: None)
    sft(SFTSettings(data=[str(chats)], steps=4, batch_rows=8, micro_batch=8, lr_scale=1.0, val_frac=0.1,
                    n_samples=1), ckpt=runs / "base", run_dir=runs / "sft", **quiet)
    dpo(DPOSettings(data=[str(pairs)], steps=3, batch_pairs=8, micro_batch=8, lr_scale=1.0, beta=0.5, val_frac=0.2,
                    n_samples=1), ckpt=runs / "sft", run_dir=runs / "dpo", **quiet)
    rl(RLSettings(task="arith:3", steps=3, prompts=2, group=4, max_new_tokens=4, eval_problems=4, n_samples=1),
       ckpt=runs / "dpo", run_dir=runs / "rl", **quiet)
    return root


@pytest.fixture(scope="session")
def micro_base(micro_data, tmp_path_factory):
    """A pretrained micro checkpoint (8 steps, seq_len 64) to post-train from: its run directory."""
    from train_fixtures import micro_run_config

    data_dir, vocab = micro_data
    run = tmp_path_factory.mktemp("posttrain") / "base"
    nw.train(micro_run_config(data_dir, run, vocab, model={"seq_len": 64}), progress=False, log=lambda *a: None)
    return run


@pytest.fixture(scope="session")
def postgres_url():
    """A postgresql:// URL of a real server started for the session (postgres_server.py); skips without
    Debian's `postgresql` package, fails then under NANOWHALE_REQUIRE_POSTGRES=1 (CI installs it)."""
    import os

    from postgres_server import REQUIRE_ENV, postgres_server, server_bin

    if server_bin() is None:
        why = "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {why}")
        pytest.skip(why)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but psycopg is not installed (pip install '.[test]')")
        pytest.skip("psycopg is not installed (pip install '.[test]')")
    with postgres_server() as url:
        yield url
