"""`nanowhale serve --ckpt RUN [--port P] [--api-key KEY]`: an OpenAI-compatible server (app.py) with a web chat
page at /, on the engine (engine.py) that `nanowhale chat` uses too."""

from __future__ import annotations

import os
import sys

from nanowhale.serve.engine import Engine, RequestError, Sampling

API_KEY_ENV = "NANOWHALE_API_KEY"


def model_name_of(run) -> str:
    from nanowhale.tasks.command import run_dir_of

    return f"nanowhale-{run_dir_of(run.checkpoint.dir).name}"


def build_app(ckpt: str, api_key: str | None = None, max_tokens: int | None = None,
              max_prompt_tokens: int | None = None, slots: int = 8, queue_size: int = 64,
              model_name: str | None = None, temperature: float = 0.8, device: str = "auto"):
    """(FastAPI app, model name) for the checkpoint `ckpt`."""
    from nanowhale.loaded import load

    try:
        from nanowhale.serve.app import create_app
    except ImportError as e:
        raise ValueError(f"nanowhale serve needs FastAPI and uvicorn ({e}): pip install 'nanowhale[serve]'") from None

    if slots < 1:
        raise ValueError(f"--slots must be >= 1, got {slots}")
    if queue_size < 0:
        raise ValueError(f"--queue must be >= 0, got {queue_size}")
    run = load(ckpt, device=device)
    engine = Engine(run, max_tokens_cap=max_tokens, max_prompt_tokens=max_prompt_tokens)
    name = model_name or model_name_of(run)
    return create_app(engine, name, api_key=api_key, slots=slots, queue_size=queue_size,
                      default_temperature=temperature), name


def resolve_api_key(flag: str | None) -> str | None:
    """--api-key, else $NANOWHALE_API_KEY, else none (no key required)."""
    return flag or os.environ.get(API_KEY_ENV) or None


def serve(ckpt: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, **kw) -> None:
    api_key = resolve_api_key(api_key)
    app, name = build_app(ckpt, api_key=api_key, **kw)
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"warning: serving on {host} without an API key: anyone who can reach it can use it "
              f"(--api-key or ${API_KEY_ENV})", file=sys.stderr)
    print(f"serving {name} on http://{host}:{port}/ (OpenAI API at /v1{', API key required' if api_key else ''})",
          file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["API_KEY_ENV", "Engine", "RequestError", "Sampling", "build_app", "serve"]
