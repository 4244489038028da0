"""`nanowhale serve`: the OpenAI-compatible API through the official `openai` client against a server on
localhost — non-streaming and streaming, concurrent requests batched, every class of bad request, the API key,
the queue bound (429) and a client that hangs up."""

import json
import threading
import time

import httpx
import numpy as np
import openai
import pytest

import nanowhale as nw
from nanowhale.serve import Engine, Sampling, build_app
from nanowhale.serve.app import _ContentEvent, _sse, create_app
from nanowhale.serve.batcher import Batcher
from scripted_model import SPLIT, script_answer
from server_fixtures import running_server

KEY = "sk-test-key"
MODEL = "whale-test"


@pytest.fixture(scope="module")
def server(micro_run):
    app, name = build_app(str(micro_run), api_key=KEY, max_tokens=48, model_name=MODEL)
    assert name == MODEL
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def engine(micro_run):
    return Engine(nw.load(micro_run))


def client(url, key=KEY):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def greedy_chat(engine, messages, n):
    return "".join(d.text for d in engine.chat(messages, Sampling(max_tokens=n, temperature=0.0)))


def test_models(server):
    c = client(server)
    assert [m.id for m in c.models.list().data] == [MODEL]
    assert c.models.retrieve(MODEL).owned_by == "nanowhale"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-5")


def test_chat_completion_matches_the_engine(server, engine):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the whale swims"}]
    r = client(server).chat.completions.create(model=MODEL, messages=msgs, max_tokens=20, temperature=0)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == MODEL and choice.message.role == "assistant"
    assert choice.message.content == greedy_chat(engine, msgs, 20)
    assert choice.finish_reason in ("stop", "length")
    prompt_len = len(engine.chat_ids(msgs))
    assert r.usage.prompt_tokens == prompt_len and 1 <= r.usage.completion_tokens <= 20
    assert r.usage.total_tokens == prompt_len + r.usage.completion_tokens


def test_completion_is_the_models_greedy_continuation(server, engine):
    r = client(server).completions.create(model=MODEL, prompt="the whale", max_tokens=12, temperature=0)
    ids = np.asarray(engine.completion_ids("the whale"), dtype=np.int32)[None]
    out = engine.model.generate(ids, 12, temperature=0.0, stop_token=engine.bos)[0, ids.shape[1]:].tolist()
    if engine.bos in out:
        out = out[: out.index(engine.bos)]
    assert r.choices[0].text == engine.tokenizer.decode(out)
    assert r.object == "text_completion" and r.usage.completion_tokens == min(12, len(out) + 1)


def test_streaming_equals_non_streaming(server):
    c = client(server)
    msgs = [{"role": "user", "content": "deep under cold grey water"}]
    whole = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=24, temperature=0)
    chunks = list(c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=24, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens and not chunks[-1].choices
    stream = c.completions.create(model=MODEL, prompt="the whale", max_tokens=10, temperature=0, stream=True)
    assert "".join(ch.choices[0].text for ch in stream) == \
        c.completions.create(model=MODEL, prompt="the whale", max_tokens=10, temperature=0).choices[0].text


@pytest.fixture(scope="module")
def scripted(micro_run):
    """(URL, the answer's tokens, the expected text of n tokens) of a server whose model answers SPLIT over and
    over (scripted_model.py) to a completion of "x" and to a chat message "x"."""
    engine = Engine(nw.load(micro_run))
    after = [engine.completion_ids("x")[-1], engine.chat_ids([{"role": "user", "content": "x"}])[-1]]
    cycle = script_answer(engine.model, engine.tokenizer, after, SPLIT)
    assert len(cycle) > len(SPLIT)  # characters split across tokens
    with running_server(create_app(engine, MODEL, api_key=KEY)) as url:
        yield url, cycle, lambda n: engine.tokenizer.decode([cycle[i % len(cycle)] for i in range(n)])


@pytest.mark.parametrize("extra", [0, 2, 5])  # the answer once, then "a" and 1 or all 4 bytes of the whale
def test_streamed_text_equals_whole_text_with_characters_split_across_tokens(scripted, extra):
    url, cycle, expected = scripted
    c = client(url)
    n = len(cycle) + extra
    kw = dict(model=MODEL, max_tokens=n, temperature=0)
    whole = c.completions.create(prompt="x", **kw).choices[0].text
    streamed = [ch.choices[0].text for ch in c.completions.create(prompt="x", stream=True, **kw)]
    chat = c.chat.completions.create(messages=[{"role": "user", "content": "x"}], stream=True, **kw)
    chat_streamed = [ch.choices[0].delta.content or "" for ch in chat if ch.choices]
    assert whole == "".join(streamed) == "".join(chat_streamed) == expected(n)
    if "\ufffd" not in expected(n):  # (an answer cut inside a character ends with its replacement)
        assert not any("\ufffd" in t for t in streamed + chat_streamed)


def test_stop_string_of_split_characters(scripted):
    url = scripted[0]
    c = client(url)
    kw = dict(model=MODEL, max_tokens=40, temperature=0, stop=["\u65e5\u00e9"])
    whole = c.completions.create(prompt="x", **kw).choices[0]
    streamed = list(c.completions.create(prompt="x", stream=True, **kw))
    assert whole.text == "".join(ch.choices[0].text for ch in streamed) == SPLIT[: SPLIT.index("\u65e5")]
    assert whole.finish_reason == streamed[-1].choices[0].finish_reason == "stop"


def test_content_event_template_equals_encoding_the_chunk():
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": 'm"\\',
             "choices": [{"index": 0, "delta": {"content": _ContentEvent.MARK}, "logprobs": None,
                          "finish_reason": None}]}
    event = _ContentEvent(chunk)
    for text in ["a", 'quote " and \\ backslash', "\n\t\x00 control", "\U0001F433 \u65e5\u00e9", "\ufffd"]:
        chunk["choices"][0]["delta"]["content"] = text
        assert event(text) == _sse(chunk)


def test_seeded_sampling_is_reproducible(server):
    c = client(server)
    kw = dict(model=MODEL, prompt="light falls", max_tokens=16, temperature=1.0, seed=7, extra_body={"top_k": 20})
    assert c.completions.create(**kw).choices[0].text == c.completions.create(**kw).choices[0].text


def concurrently(fn, n: int) -> list:
    """fn(0) ... fn(n - 1) on n threads at once; their results in order (any exception fails the test)."""
    results, errors = [None] * n, []

    def run(i):
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def error_of(exc_info):
    body = exc_info.value.body
    assert set(body) >= {"message", "type", "param", "code"}, body  # the client unwraps {"error": {...}}
    return body


@pytest.mark.parametrize("kwargs, param, code", [
    (dict(model="gpt-5"), "model", "model_not_found"),
    (dict(messages=[{"role": "robot", "content": "hi"}]), "messages.0.role", None),
    (dict(messages=[{"role": "assistant", "content": "hi"}]), "messages", None),
    (dict(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]), "messages", None),
    (dict(messages=[]), "messages", None),
    (dict(messages=[{"role": "user"}]), "messages.0.content", None),
    (dict(messages=[{"role": "user", "content": "whale " * 400}]), "messages", "context_length_exceeded"),
    (dict(max_tokens=1000), "max_tokens", "max_tokens_exceeded"),
    (dict(max_tokens=0), "max_tokens", None),
    (dict(temperature=5), "temperature", None),
    (dict(n=2), "n", None),
    (dict(stop=["a", "b", "c", "d", "e"]), "stop", None),
])
def test_bad_chat_requests_get_openai_errors(server, kwargs, param, code):
    args = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4) | kwargs
    expected = openai.NotFoundError if code == "model_not_found" else openai.BadRequestError
    for stream in (False, True):
        with pytest.raises(expected) as e:
            client(server).chat.completions.create(**args, stream=stream)
        body = error_of(e)
        assert body["param"] == param and body["code"] == code and body["message"]
        assert e.value.status_code == (404 if code == "model_not_found" else 400)


def test_raw_http_errors(server):
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server, timeout=30) as h:
        r = h.post("/v1/chat/completions", content=b"{not json", headers=auth | {"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = h.post("/v1/completions", json={"prompt": "x"}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        r = h.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"]}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        r = h.get("/v1/nothing", headers=auth)
        assert r.status_code == 404 and "error" in r.json()
        r = h.get("/v1/chat/completions", headers=auth)
        assert r.status_code == 405 and "error" in r.json()
        r = h.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert h.get("/").status_code == 200  # the page itself needs no key
        stream = h.post("/v1/completions", headers=auth, json={"model": MODEL, "prompt": "the", "max_tokens": 3,
                                                               "stream": True})
        events = [line for line in stream.text.split("\n\n") if line]
        assert events[-1] == "data: [DONE]" and json.loads(events[0][6:])["object"] == "text_completion"


def test_api_key_required(server):
    with pytest.raises(openai.AuthenticationError) as e:
        client(server, key="wrong").models.list()
    assert error_of(e)["code"] == "invalid_api_key"
    # still serving after every bad request above
    assert client(server).completions.create(model=MODEL, prompt="a", max_tokens=2).choices[0].text is not None


class GatedBatcher(Batcher):
    """A batcher whose steps wait for the test's permits, so the test decides when generations advance."""

    def __init__(self, engine, slots, queue_size):
        super().__init__(engine, slots, queue_size)
        self.permits = threading.Semaphore(0)

    def submit(self, ids, s, chat, deliver, loop=None):
        self.loop = loop  # the server's event loop, which the last request's tokens go to
        return super().submit(ids, s, chat, deliver, loop)

    def step(self):
        assert self.permits.acquire(timeout=60), "the test gave no permit for a step"
        return super().step()

    def open(self):
        for _ in range(100_000):
            self.permits.release()


def wait_until(condition, what):
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_queue_full_gives_429_with_retry_after_and_everyone_queued_is_answered(micro_run):
    batcher = GatedBatcher(Engine(nw.load(micro_run)), slots=2, queue_size=1)
    with running_server(create_app(batcher.engine, MODEL, batcher=batcher)) as url:
        c = client(url)
        msgs = [{"role": "user", "content": "hi"}]
        results = []
        threads = [threading.Thread(target=lambda: results.append(c.chat.completions.create(
            model=MODEL, messages=msgs, max_tokens=4).choices[0].message.content)) for _ in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: batcher.pending == 3, "3 requests in the batcher")  # 2 in slots, 1 queued
        for stream in (False, True):
            with pytest.raises(openai.RateLimitError) as e:
                c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4, stream=stream)
            assert error_of(e)["code"] == "rate_limit_exceeded" and e.value.status_code == 429
            assert int(e.value.response.headers["Retry-After"]) >= 1
        batcher.open()
        for t in threads:
            t.join(30)
        assert len(results) == 3 and batcher.pending == 0
        for _ in range(3):  # the slots came back (and a stream's too)
            assert c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4).choices[0].message.content
            assert list(c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4, stream=True))


def test_eight_concurrent_streams_are_batched_and_equal_sequential_answers(micro_run):
    n = 12
    batcher = GatedBatcher(Engine(nw.load(micro_run)), slots=8, queue_size=0)
    prompts = ["the whale", "small fish gather", "a reef of stone", "def return class", "deep water", "light",
               "grey seals sing", "ships pass by"]
    kw = dict(model=MODEL, max_tokens=n, temperature=0, extra_body={"ignore_eos": True})
    with running_server(create_app(batcher.engine, MODEL, batcher=batcher)) as url:
        c = client(url)

        def stream(i):
            s = c.chat.completions.create(messages=[{"role": "user", "content": prompts[i]}], stream=True, **kw)
            return "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)

        def open_when_all_wait():
            try:
                wait_until(lambda: batcher.pending == 8, "8 streams in the batcher")
            finally:
                batcher.open()  # (if they never all arrived, the step count below fails the test)

        threading.Thread(target=open_when_all_wait, daemon=True).start()
        got = concurrently(stream, 8)
        concurrent_steps = batcher.batch.decode_steps
        want = [c.chat.completions.create(messages=[{"role": "user", "content": p}], **kw).choices[0].message.content
                for p in prompts]
        sequential_steps = batcher.batch.decode_steps - concurrent_steps
    assert got == want
    # n tokens each: one batched forward per step for the 8 streams (the first to arrive may run one step
    # alone before the others join), against n - 1 forwards per stream one after another
    assert concurrent_steps <= n and sequential_steps == 8 * (n - 1)


def test_a_stream_gets_an_event_per_token_or_all_its_waiting_tokens_in_one(micro_run):
    """While the server's event loop keeps up, each token goes out in its own event; while it is busy, a stream's
    tokens wait in its queue and the next event carries them all (fewer sends when the server is loaded)."""
    engine = Engine(nw.load(micro_run))
    script_answer(engine.model, engine.tokenizer, engine.chat_ids([{"role": "user", "content": "x"}])[-1:],
                  "abcdefgh")  # (ASCII: every token has text)
    batcher = GatedBatcher(engine, slots=1, queue_size=0)
    with running_server(create_app(engine, MODEL, batcher=batcher)) as url:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 8,
                "temperature": 0, "ignore_eos": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body | {"stream": True}, timeout=30) as r:
            events = (json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {"))
            assert next(events)["choices"][0]["delta"]["role"] == "assistant"
            one_by_one = []
            for _ in range(3):
                batcher.permits.release(1)  # one step: one token, and its event
                one_by_one.append(next(events)["choices"][0]["delta"]["content"])
            busy, resume = threading.Event(), threading.Event()
            batcher.loop.call_soon_threadsafe(lambda: (busy.set(), resume.wait(30)))  # the loop is busy ...
            assert busy.wait(30)
            batcher.permits.release(5)
            wait_until(lambda: batcher.pending == 0, "the whole generation")  # ... while the last 5 tokens come
            resume.set()
            rest = list(events)
        batcher.open()
        whole = httpx.post(url + "/v1/chat/completions", json=body, timeout=30).json()
    assert len(rest) == 1 and rest[0]["choices"][0]["finish_reason"] == "length"
    assert all(one_by_one)
    assert "".join(one_by_one) + rest[0]["choices"][0]["delta"]["content"] == whole["choices"][0]["message"]["content"]


def test_thirty_two_concurrent_requests_are_all_answered(server):
    c = client(server)
    answers = concurrently(lambda i: c.completions.create(model=MODEL, prompt=f"whale {i}", max_tokens=6,
                                                          temperature=0).choices[0].finish_reason, 32)
    assert all(a in ("stop", "length") for a in answers)


def test_api_key_from_flag_or_environment(monkeypatch):
    from nanowhale.serve import API_KEY_ENV, resolve_api_key

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert resolve_api_key(None) is None
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert resolve_api_key(None) == "from-env" and resolve_api_key("flag") == "flag"


def test_a_client_that_disconnects_frees_its_slot(micro_run):
    batcher = GatedBatcher(Engine(nw.load(micro_run)), slots=1, queue_size=0)
    with running_server(create_app(batcher.engine, MODEL, batcher=batcher)) as url:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 40,
                "ignore_eos": True}
        batcher.permits.release(2)  # two steps: two tokens of the 40
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()  # (one iterator: dropping it would close the response)
            assert next(lines).startswith("data: ")  # the role chunk
            wait_until(lambda: batcher.batch.decode_steps == 2, "two steps of the generation")
            assert batcher.pending == 1  # it is running; the client hangs up
        # No more steps can run, so only the hang-up can end the generation and free the slot.
        wait_until(lambda: batcher.pending == 0, "the slot of the client that went away")
        assert batcher.batch.active == 0
        batcher.open()
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            assert r.status_code == 200 and r.read().decode().rstrip().endswith("data: [DONE]")
