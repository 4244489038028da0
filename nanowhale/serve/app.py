"""The OpenAI-compatible HTTP API (FastAPI on Starlette, served by uvicorn) and the web chat page.

    GET  /                      the chat page (page.html: one file, no build step, nothing from the network)
    GET  /v1/models             the one model this server holds; GET /v1/models/{id}
    POST /v1/completions        {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream"}
    POST /v1/chat/completions   {"model", "messages", ...the same; "max_completion_tokens" too}
    (top_k and ignore_eos, not OpenAI fields, are accepted as extra body fields, as vLLM does.)

Streaming answers are server-sent events (`data: {chunk}` ... `data: [DONE]`), chunks shaped as OpenAI's.
Every failure is an OpenAI error body, {"error": {"message", "type", "param", "code"}}, with its status:
400 malformed or too long (never FastAPI's 422), 401 missing or wrong API key, 404 unknown model or path,
429 when `max_concurrent` generations already run, 500 for a bug (logged; the server keeps serving).
Generations run on worker threads; the engine's C++ steps release the GIL and take the model's lock, so
concurrent streams interleave token by token. A client that disconnects stops its generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from nanowhale.serve.engine import Engine, RequestError, Sampling

log = logging.getLogger("nanowhale.serve")
PAGE = Path(__file__).with_name("page.html")


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send fields we do not use (user, penalties, ...)

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    ignore_eos: bool = False
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None


class CompletionRequest(_Request):
    prompt: str | list[str]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(status: int, message: str, **kw) -> JSONResponse:
    return JSONResponse(error_body(message, **kw), status_code=status)


class Slots:
    """At most `n` generations at once; a request over the limit is refused (429), not queued."""

    def __init__(self, n: int):
        self.n, self.used, self.lock = n, 0, threading.Lock()

    def take(self):
        """A release function (idempotent: a stream may end, be closed and be collected)."""
        with self.lock:
            if self.used >= self.n:
                raise RequestError(f"{self.n} generations are already running on this server; retry shortly",
                                   status=429, code="rate_limit_exceeded", type="rate_limit_error")
            self.used += 1
        released = threading.Event()

        def release() -> None:
            with self.lock:
                if not released.is_set():
                    released.set()
                    self.used -= 1
        return release


def _sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def create_app(engine: Engine, model_name: str, api_key: str | None = None, max_concurrent: int = 4,
               default_temperature: float = 0.8) -> FastAPI:
    app = FastAPI(title="nanowhale", docs_url=None, redoc_url=None, openapi_url=None)
    slots = Slots(max_concurrent)
    created = int(time.time())
    model_card = {"id": model_name, "object": "model", "created": created, "owned_by": "nanowhale"}

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, e: RequestError):
        return error_response(e.status, str(e), type=e.type, param=e.param, code=e.code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        err = e.errors()[0]
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            return error_response(400, "We could not parse the JSON body of your request.")
        where = ".".join(loc) or "body"
        return error_response(400, f"Invalid request: {where}: {err.get('msg')}", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        if e.status_code == 404:
            return error_response(404, f"Unknown path {request.method} {request.url.path}", code="not_found")
        if e.status_code == 405:
            return error_response(405, f"Method {request.method} is not allowed on {request.url.path}")
        return error_response(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        log.exception("error while serving %s", request.url.path)
        return error_response(500, "The server had an error while processing your request.", type="server_error")

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            if not secrets.compare_digest(given.encode(), api_key.encode()):
                what = ("Incorrect API key provided." if given
                        else "You didn't provide an API key (Authorization: Bearer KEY).")
                return error_response(401, what, code="invalid_api_key")
        return await call_next(request)

    def check_model(name: str) -> None:
        if name != model_name:
            raise RequestError(f"The model `{name}` does not exist; this server serves `{model_name}`.", status=404,
                               code="model_not_found", param="model")

    def sampling(req: _Request, max_tokens: int | None, max_tokens_field: str = "max_tokens") -> Sampling:
        if req.n != 1:
            raise RequestError(f"n must be 1 on this server, got {str(req.n)[:40]}", param="n")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return Sampling(max_tokens=max_tokens,
                        temperature=default_temperature if req.temperature is None else req.temperature,
                        top_k=req.top_k or 0, top_p=1.0 if req.top_p is None else req.top_p,
                        seed=req.seed if req.seed is not None else secrets.randbits(31), stop=stop,
                        ignore_eos=req.ignore_eos, max_tokens_field=max_tokens_field)

    async def run(ids: list[int], s: Sampling, chat: bool, stream: bool, shape, include_usage: bool):
        """Checks, takes a slot, and answers: a JSON body, or a stream of SSE chunks."""
        engine.prepare(ids, s)  # 400s before a slot is taken
        release = slots.take()
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        if not stream:
            def collect():
                try:
                    deltas = list(engine.stream(ids, s, chat, chunk=16))
                finally:
                    release()
                return "".join(d.text for d in deltas), deltas[-1]

            text, last = await run_in_threadpool(collect)
            usage = {"prompt_tokens": len(ids), "completion_tokens": last.tokens,
                     "total_tokens": len(ids) + last.tokens}
            return JSONResponse(shape(rid, text, last.finish_reason, final=True) | {"usage": usage})

        async def events():
            # A producer thread runs the generation and hands deltas to the event loop: generation does not
            # wait for each chunk to be sent, and the loop never blocks on the model.
            loop, queue, cancelled = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

            def produce():
                try:
                    for delta in engine.stream(ids, s, chat, chunk=1):
                        loop.call_soon_threadsafe(queue.put_nowait, delta)
                        if cancelled.is_set():
                            break
                    loop.call_soon_threadsafe(queue.put_nowait, None)
                except Exception as e:  # noqa: BLE001  (reported in the stream below)
                    loop.call_soon_threadsafe(queue.put_nowait, e)
                finally:
                    release()

            try:
                if chat:
                    yield _sse(shape(rid, None, None, final=False, role=True))
                threading.Thread(target=produce, name=f"generate-{rid}", daemon=True).start()
                last = None
                while (item := await queue.get()) is not None:
                    if isinstance(item, Exception):
                        raise item
                    last = item
                    if item.text or item.finish_reason:
                        yield _sse(shape(rid, item.text, item.finish_reason, final=False))
                if include_usage and last is not None:
                    usage = {"prompt_tokens": len(ids), "completion_tokens": last.tokens,
                             "total_tokens": len(ids) + last.tokens}
                    yield _sse(shape(rid, None, None, final=False, empty=True) | {"usage": usage})
                yield "data: [DONE]\n\n"
            except Exception:  # the status line has gone: report in the stream, keep serving
                log.exception("error while streaming %s", rid)
                yield _sse(error_body("The server had an error while generating.", type="server_error"))
            finally:
                cancelled.set()  # a client that went away stops its generation at the next token

        body = events()
        weakref.finalize(body, release)  # a stream dropped before its producer started still frees its slot
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{name}")
    async def model(name: str):
        check_model(name)
        return model_card

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        check_model(req.model)
        if isinstance(req.prompt, list):
            if len(req.prompt) != 1:
                raise RequestError("this server takes one prompt per request", param="prompt")
            prompt = req.prompt[0]
        else:
            prompt = req.prompt
        s = sampling(req, req.max_tokens if req.max_tokens is not None else 16)  # OpenAI's default for completions

        def shape(rid, text, finish, final, role=False, empty=False):
            choices = [] if empty else [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]
            return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_name,
                    "choices": choices}
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return await run(engine.completion_ids(prompt), s, False, req.stream, shape, include_usage)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):
        check_model(req.model)
        messages = []
        for m in req.messages:
            content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
            messages.append({"role": "system" if m.role == "developer" else m.role, "content": content})
        if req.max_completion_tokens is not None:
            s = sampling(req, req.max_completion_tokens, "max_completion_tokens")
        else:
            s = sampling(req, req.max_tokens)

        def shape(rid, text, finish, final, role=False, empty=False):
            if final:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                          "finish_reason": finish}
            else:
                delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"id": rid, "object": "chat.completion" if final else "chat.completion.chunk",
                    "created": int(time.time()), "model": model_name, "choices": [] if empty else [choice]}
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return await run(engine.chat_ids(messages), s, True, req.stream, shape, include_usage)

    return app


__all__ = ["create_app", "error_body"]
