"""Evaluation throughput and server latency on one checkpoint, each side by side with a reference.

    python benchmarks/bench_serve_eval.py --ckpt runs/X [--items 200] [--tokens 64] [--repeats 3]

Eval: multiple-choice items/s on hellaswag and piqa (the first --items), batched scoring (16 rows per
forward) against one row per forward; GSM8K generated items/s (greedy, --gsm8k items).
Server: an in-process uvicorn server on 127.0.0.1; for 1 and 4 concurrent streaming chat requests of
exactly --tokens tokens (temperature 0, ignore_eos), the time to the first content chunk (TTFT) and tokens/s
per stream and in total, against the engine called directly (no HTTP). One keep-alive HTTP client (httpx) is
shared by the streams, so connection setup is not timed. Medians over --repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

import nanowhale as nw
from nanowhale.serve import Engine, Sampling, build_app
from nanowhale.tasks import ModelScorer, make_task, run_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
from server_fixtures import running_server  # noqa: E402

PROMPTS = ["Tell me about whales.", "What is a reef?", "Write a short poem about the sea.", "How do fish breathe?"]


def bench_eval(run, items: int, gsm8k: int, repeats: int) -> list[str]:
    lines = ["| task | items | batched items/s | one row per forward items/s |", "|---|---:|---:|---:|"]
    for name in ("hellaswag", "piqa"):
        rates = {}
        for rows in (16, 1):
            scorer = ModelScorer(run.model, run.tokenizer, batch_rows=rows)
            rates[rows] = statistics.median(run_task(scorer, make_task(name), limit=items)["items_per_second"]
                                            for _ in range(repeats))
        lines.append(f"| {name} | {items} | {rates[16]:.1f} | {rates[1]:.1f} |")
    if gsm8k:
        r = run_task(ModelScorer(run.model, run.tokenizer), make_task("gsm8k"), limit=gsm8k)
        lines.append(f"| gsm8k (generated) | {gsm8k} | {r['items_per_second']:.2f} | — |")
    return lines


def stream_once(client: httpx.Client, model: str, prompt: str, tokens: int, out: dict) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter()
            if chunk.get("usage"):
                out["tokens"] = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    out.update(ttft=(first or end) - t0, seconds=end - t0)


def bench_server(run, tokens: int, repeats: int) -> list[str]:
    engine = Engine(run)
    app, model = build_app(str(run.checkpoint.dir), max_concurrent=8)
    lines = ["| streams | path | TTFT median (s) | tokens/s per stream | tokens/s total |", "|---:|---|---:|---:|---:|"]
    for streams in (1, 4):
        # Reference: the engine itself, the same concurrency on threads, no HTTP.
        stats = {"direct": [], "http": []}
        for _ in range(repeats):
            results = [{} for _ in range(streams)]

            def direct(i):
                t0 = time.perf_counter()
                first, n = None, 0
                for d in engine.chat([{"role": "user", "content": PROMPTS[i % 4]}],
                                     Sampling(max_tokens=tokens, temperature=0.0, ignore_eos=True)):
                    if d.text and first is None:
                        first = time.perf_counter()
                    n = d.tokens
                end = time.perf_counter()
                results[i].update(ttft=(first or end) - t0, seconds=end - t0, tokens=n)
            stats["direct"].append(_run_threads(direct, streams, results))
        with running_server(app) as url, httpx.Client(base_url=url, timeout=600) as client:
            stream_once(client, model, PROMPTS[0], 2, {})  # connect and warm up
            for _ in range(repeats):
                results = [{} for _ in range(streams)]
                stats["http"].append(_run_threads(
                    lambda i: stream_once(client, model, PROMPTS[i % 4], tokens, results[i]), streams, results))
        for path in ("direct", "http"):
            ttft = statistics.median(s[0] for s in stats[path])
            per = statistics.median(s[1] for s in stats[path])
            total = statistics.median(s[2] for s in stats[path])
            lines.append(f"| {streams} | {'engine (no HTTP)' if path == 'direct' else 'HTTP + SSE'} | {ttft:.4f} | "
                         f"{per:.1f} | {total:.1f} |")
    return lines


def _run_threads(fn, n, results):
    """(median TTFT, median tokens/s per stream, total tokens/s) of n concurrent calls fn(i)."""
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return (statistics.median(r["ttft"] for r in results),
            statistics.median(r["tokens"] / r["seconds"] for r in results),
            sum(r["tokens"] for r in results) / wall)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--gsm8k", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    args = ap.parse_args()
    if args.threads:
        nw.set_num_threads(args.threads)
    run = nw.load(args.ckpt)
    cfg = run.model.config
    print(f"checkpoint {run.checkpoint.dir}: {cfg.num_params() / 1e6:.1f}M params, seq_len {cfg.seq_len}, "
          f"{nw.get_num_threads()} threads, device {run.model.device}\n")
    print("\n".join(bench_eval(run, args.items, args.gsm8k, args.repeats)) + "\n")
    print("\n".join(bench_server(run, args.tokens, args.repeats)))


if __name__ == "__main__":
    main()
