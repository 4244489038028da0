"""No request stops `nanowhale serve`: every number a request carries into the engine, at its type's extremes,
gets an OpenAI-style 400 or a valid answer, and the server process is still serving after each. The server
runs as its own process (`python -m nanowhale.cli serve`), so a crash shows as the process's exit status."""

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import nanowhale as nw

MODEL = "whale-limits"
HUGE_STRING = "9" * 100_000
EXTREMES = [0, -1, 2**31, 2**63, 2**64, 2**80, -2**80, math.nan, math.inf, -math.inf, 1e308, HUGE_STRING, 10**400]
# Every field that reaches sampling or generation, plus OpenAI fields the server accepts and ignores.
FIELDS = ["seed", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n", "stop", "logprobs",
          "top_logprobs", "presence_penalty", "frequency_penalty", "ignore_eos", "stream"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(micro_run):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nanowhale.cli", "serve", "--ckpt", str(micro_run), "--port",
                             str(port), "--model-name", MODEL, "--max-tokens", "8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=Path(nw.__file__).resolve().parent.parent)  # the nanowhale this test imported
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"the server exited ({proc.returncode}): {proc.stderr.read()}"
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)
    with httpx.Client(base_url=url, timeout=60) as client:
        yield proc, client
    proc.terminate()
    proc.wait(10)


def post(client, body: dict) -> httpx.Response:
    # json.dumps writes NaN and Infinity (not strict JSON, but what a careless or hostile client sends)
    return client.post("/v1/chat/completions", content=json.dumps(body), headers={"Content-Type": "application/json"})


def assert_alive(proc, client):
    assert proc.poll() is None, f"the server died with exit status {proc.returncode}"
    r = post(client, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"


def assert_answer_or_400(r: httpx.Response, field: str):
    if r.status_code == 200:
        if r.headers["content-type"].startswith("text/event-stream"):
            assert r.text.rstrip().endswith("data: [DONE]") and "server_error" not in r.text
        else:
            assert r.json()["choices"][0]["message"]["content"] is not None
        return
    assert r.status_code == 400, (field, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"], error
    assert error["param"] is None or error["param"].split(".")[0] == field, error


def test_a_seed_of_2_to_the_80_is_refused_and_the_server_lives(server):
    proc, client = server
    r = post(client, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                      "seed": 1208925819614629174706176})  # 2^80: killed the server with SIGSEGV
    assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
    assert_alive(proc, client)


@pytest.mark.parametrize("field", FIELDS)
def test_every_field_at_its_extremes(server, field):
    proc, client = server
    for value in EXTREMES:
        for stream in (False, True):
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                    "stream": stream, field: value}
            assert_answer_or_400(post(client, body), field)
            assert proc.poll() is None, f"{field}={str(value)[:30]} (stream={stream}) ended the server"
    assert_alive(proc, client)


def test_stop_lists_at_their_extremes(server):
    proc, client = server
    for stop in ([HUGE_STRING], [""], ["a", HUGE_STRING, "\ud800" * 3], [None], [1, 2], {"a": 1}):
        r = post(client, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                          "stop": stop})
        assert_answer_or_400(r, "stop")
    assert_alive(proc, client)


def test_seeds_across_the_64_bit_range_are_answered(server):
    proc, client = server
    for seed in (0, -1, -2**63, 2**63 - 1, 2**64 - 1):
        r = post(client, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                          "temperature": 1.0, "seed": seed})
        assert r.status_code == 200, (seed, r.text)
    for seed in (-2**63 - 1, 2**64):
        r = post(client, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "seed": seed})
        assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
    assert_alive(proc, client)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed=2**80), r"seed must be in \[0, 2\^64 - 1\]"),
    (dict(seed=-1), r"seed must be in \[0, 2\^64 - 1\]"),
    (dict(seed="7"), "seed must be an integer"),
    (dict(top_k=2**31), r"top_k must be in \[0, 2147483647\]"),
    (dict(top_k=-1), r"top_k must be in \[0, 2147483647\]"),
    (dict(max_new_tokens=2**63), r"max_new_tokens must be in"),
    (dict(temperature=math.nan), "temperature must be finite"),
    (dict(temperature=10**400), "temperature is out of range"),
    (dict(temperature=1e300), "temperature must be finite"),  # inf once narrowed to float32
    (dict(top_p=math.inf), r"top_p must be in \(0, 1\]"),
    (dict(top_p=None), "top_p must be a real number"),
])
def test_the_engine_refuses_out_of_range_numbers_with_value_errors(micro_run, kwargs, message):
    model = nw.load(micro_run).model
    prompt = np.zeros((1, 2), np.int32)
    args = dict(max_new_tokens=2) | kwargs
    with pytest.raises(ValueError, match=message):
        model.start_generation(prompt, **args)
    with pytest.raises(ValueError, match=message):
        model.generate(prompt, **args)
    stops = dict(stop_tokens=[2**70])
    with pytest.raises(ValueError, match=r"stop_tokens must be in \[0, 2147483647\]"):
        model.start_generation(prompt, 2, **stops)
    assert model.generate(prompt, 2, seed=2**64 - 1).shape == (1, 4)  # the whole uint64 range is a seed
