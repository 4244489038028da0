"""`nanowhale serve`: the OpenAI-compatible API through the official `openai` client against a server on
localhost — non-streaming and streaming, concurrent requests, every class of bad request, the API key and the
concurrency bound."""

import json
import threading

import httpx
import numpy as np
import openai
import pytest

import nanowhale as nw
from nanowhale.serve import Engine, Sampling, build_app
from nanowhale.serve.app import create_app
from server_fixtures import running_server

KEY = "sk-test-key"
MODEL = "whale-test"


@pytest.fixture(scope="module")
def server(micro_run):
    app, name = build_app(str(micro_run), api_key=KEY, max_tokens=48, model_name=MODEL, max_concurrent=4)
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
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) > 1  # it did stream
    stream = c.completions.create(model=MODEL, prompt="the whale", max_tokens=10, temperature=0, stream=True)
    assert "".join(ch.choices[0].text for ch in stream) == \
        c.completions.create(model=MODEL, prompt="the whale", max_tokens=10, temperature=0).choices[0].text


def test_seeded_sampling_is_reproducible(server):
    c = client(server)
    kw = dict(model=MODEL, prompt="light falls", max_tokens=16, temperature=1.0, seed=7, extra_body={"top_k": 20})
    assert c.completions.create(**kw).choices[0].text == c.completions.create(**kw).choices[0].text


def test_concurrent_streams_each_get_their_own_answer(server):
    c = client(server)
    prompts = ["the whale", "small fish gather", "a reef of stone", "def return class"]
    want = [c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=24,
                                      temperature=0).choices[0].message.content for p in prompts]
    got = [None] * 4
    errors = []

    def run(i):
        try:
            s = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompts[i]}],
                                          max_tokens=24, temperature=0, stream=True)
            got[i] = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and got == want


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


class GatedEngine(Engine):
    """Generations wait for the test's gate, so the test controls how many are running; `waiting` counts them."""

    def __init__(self, run):
        super().__init__(run)
        self.gate, self.waiting = threading.Event(), threading.Semaphore(0)

    def stream(self, ids, s, chat, chunk=1):
        inner = super().stream(ids, s, chat, chunk)

        def gated():
            self.waiting.release()
            self.gate.wait(30)
            yield from inner
        return gated()


def test_concurrency_bound_gives_429_and_frees_slots(micro_run):
    engine = GatedEngine(nw.load(micro_run))
    with running_server(create_app(engine, MODEL, max_concurrent=2)) as url:
        c = client(url)
        msgs = [{"role": "user", "content": "hi"}]
        results = []
        threads = [threading.Thread(target=lambda: results.append(c.chat.completions.create(
            model=MODEL, messages=msgs, max_tokens=4).choices[0].message.content)) for _ in range(2)]
        for t in threads:
            t.start()
        assert engine.waiting.acquire(timeout=20) and engine.waiting.acquire(timeout=20)  # both hold a slot
        for stream in (False, True):
            with pytest.raises(openai.RateLimitError) as e:
                c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4, stream=stream)
            assert error_of(e)["code"] == "rate_limit_exceeded" and e.value.status_code == 429
        engine.gate.set()
        for t in threads:
            t.join(30)
        assert len(results) == 2
        for _ in range(3):  # the slots came back (and a stream releases its slot too)
            answer = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4)
            assert answer.choices[0].message.content is not None
            assert list(c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4, stream=True))


def test_api_key_from_flag_or_environment(monkeypatch):
    from nanowhale.serve import API_KEY_ENV, resolve_api_key

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert resolve_api_key(None) is None
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert resolve_api_key(None) == "from-env" and resolve_api_key("flag") == "flag"


class EndlessEngine(Engine):
    """A generation that would run for about a minute, one delta every 50 ms."""

    def stream(self, ids, s, chat, chunk=1):
        import time

        from nanowhale.generate import TextDelta

        def slow():
            for i in range(1200):
                time.sleep(0.05)
                yield TextDelta("x", i + 1)
        return slow()


def test_a_client_that_disconnects_frees_its_slot(micro_run):
    import time

    engine = EndlessEngine(nw.load(micro_run))
    with running_server(create_app(engine, MODEL, max_concurrent=1)) as url:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            assert next(r.iter_lines()).startswith("data: ")  # streaming; then the client hangs up
        deadline = time.monotonic() + 20
        while True:
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
                status = r.status_code
            if status != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # the slot came back long before the first generation would have ended (its client is gone)
        assert status == 200
