"""The OpenAI-compatible HTTP API (FastAPI on Starlette, served by uvicorn) and the web chat page.

    GET  /                      the chat page (page.html: one file, no build step, nothing from the network)
    GET  /v1/models             the one model this server holds; GET /v1/models/{id}
    POST /v1/completions        {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream"}
    POST /v1/chat/completions   {"model", "messages", ...the same; "max_completion_tokens" too}
    (top_k and ignore_eos, not OpenAI fields, are accepted as extra body fields, as vLLM does.)

Streaming answers are server-sent events (`data: {chunk}` ... `data: [DONE]`), chunks shaped as OpenAI's.
Every failure is an OpenAI error body, {"error": {"message", "type", "param", "code"}}, with its status:
400 malformed or too long (never FastAPI's 422), 401 missing or wrong API key, 404 unknown model or path,
429 with Retry-After when `slots` generations run and `queue_size` more wait, 500 for a bug (logged; the
server keeps serving). Generations are batched (batcher.py: one forward pass per step for all of them, in C++
with the GIL released); the event loop only turns each request's tokens into text. A client that disconnects
stops its generation and frees its slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
import weakref
from json.encoder import encode_basestring_ascii as _json_string  # json.dumps of a str, without its checks
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from nanowhale.generate import TextAssembler
from nanowhale.serve.batcher import Batcher
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


class ApiKeyCheck:
    """Requires `Authorization: Bearer KEY` on /v1 (401 otherwise). A plain ASGI middleware: Starlette's
    BaseHTTPMiddleware would pass every streamed chunk through a memory stream and a task switch."""

    def __init__(self, app, api_key: str):
        self.app, self.api_key = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            header = Headers(scope=scope).get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            if not secrets.compare_digest(given.encode(), self.api_key):
                what = ("Incorrect API key provided." if given
                        else "You didn't provide an API key (Authorization: Bearer KEY).")
                await error_response(401, what, code="invalid_api_key")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


class _ContentEvent:
    """The server-sent event of one content delta of a stream, text(delta) == _sse(chunk with that text): the
    chunk is rendered once with a marker as its text, then each event only encodes its text into the template
    (the per-token cost of a stream)."""

    MARK = "\x00content\x00"

    def __init__(self, chunk: dict):
        self.head, self.tail = _sse(chunk).split(json.dumps(self.MARK))

    def __call__(self, text: str) -> str:
        return self.head + _json_string(text) + self.tail


def create_app(engine: Engine, model_name: str, api_key: str | None = None, slots: int = 8, queue_size: int = 64,
               default_temperature: float = 0.8, batcher: Batcher | None = None) -> FastAPI:
    """batcher: the generations' batcher (default: a Batcher(engine, slots, queue_size))."""
    app = FastAPI(title="nanowhale", docs_url=None, redoc_url=None, openapi_url=None)
    batcher = batcher or Batcher(engine, slots, queue_size)
    app.state.batcher = batcher
    created = int(time.time())
    model_card = {"id": model_name, "object": "model", "created": created, "owned_by": "nanowhale"}

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, e: RequestError):
        response = error_response(e.status, str(e), type=e.type, param=e.param, code=e.code)
        response.headers.update(e.headers or {})
        return response

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

    if api_key:
        app.add_middleware(ApiKeyCheck, api_key=api_key)

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
        """Checks, queues the generation (400 or 429 here), and answers: a JSON body, or a stream of SSE chunks."""
        loop, tokens = asyncio.get_running_loop(), asyncio.Queue()
        ticket = batcher.submit(ids, s, chat, tokens.put_nowait, loop)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())  # one time for every chunk of a stream, as OpenAI's
        text = TextAssembler(engine.tokenizer, engine.stop_tokens(s, chat), s.stop)

        async def deltas():
            """The generation's text as it comes: a delta per token while this loop keeps up with the batch, else one
            for all the tokens that arrived meanwhile (so a busy server sends fewer, larger events); a stop string
            ends the generation at once."""
            try:
                while not text.finished:
                    item = await tokens.get()
                    while not isinstance(item, Exception) and not tokens.empty():  # take them together
                        more = tokens.get_nowait()
                        item = more if isinstance(more, Exception) else (item[0] + more[0], more[1], more[2])
                    if isinstance(item, Exception):
                        raise item
                    if (delta := text.feed(*item)) is not None:
                        yield delta
            finally:
                ticket.cancel()  # a stop string matched, or the client went away: free the slot now

        def usage(last):
            return {"prompt_tokens": len(ids), "completion_tokens": last.tokens, "total_tokens": len(ids) + last.tokens}

        if not stream:
            try:
                parts = [d async for d in deltas()]
            finally:
                ticket.cancel()
            body = shape(rid, created, "".join(d.text for d in parts), parts[-1].finish_reason, final=True)
            return JSONResponse(body | {"usage": usage(parts[-1])})

        content = _ContentEvent(shape(rid, created, _ContentEvent.MARK, None, final=False))

        async def events():
            try:
                if chat:
                    yield _sse(shape(rid, created, None, None, final=False, role=True))
                last = None
                async for delta in deltas():
                    last = delta
                    if delta.finish_reason:
                        yield _sse(shape(rid, created, delta.text, delta.finish_reason, final=False))
                    elif delta.text:
                        yield content(delta.text)
                if include_usage and last is not None:
                    yield _sse(shape(rid, created, None, None, final=False, empty=True) | {"usage": usage(last)})
                yield "data: [DONE]\n\n"
            except Exception:  # the status line has gone: report in the stream, keep serving
                log.exception("error while streaming %s", rid)
                yield _sse(error_body("The server had an error while generating.", type="server_error"))
            finally:
                ticket.cancel()

        body = events()
        weakref.finalize(body, ticket.cancel)  # a stream dropped before it started still frees its slot
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

        def shape(rid, created, text, finish, final, role=False, empty=False):
            choices = [] if empty else [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]
            return {"id": rid, "object": "text_completion", "created": created, "model": model_name,
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

        def shape(rid, created, text, finish, final, role=False, empty=False):
            if final:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                          "finish_reason": finish}
            else:
                delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"id": rid, "object": "chat.completion" if final else "chat.completion.chunk",
                    "created": created, "model": model_name, "choices": [] if empty else [choice]}
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return await run(engine.chat_ids(messages), s, True, req.stream, shape, include_usage)

    return app


__all__ = ["create_app", "error_body"]
