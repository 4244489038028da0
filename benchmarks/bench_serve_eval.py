"""Evaluation throughput and server latency on one checkpoint, each side by side with a reference.

    python benchmarks/bench_serve_eval.py --ckpt runs/X [--items 200] [--tokens 64] [--repeats 3] [--streams 1,4,16]
                                          [--baseline-tree DIR]

Eval: multiple-choice items/s on hellaswag and piqa (the first --items), batched scoring (16 rows per
forward) against one row per forward; GSM8K generated items/s (greedy, --gsm8k items).
Server: `nanowhale serve` in its own process on 127.0.0.1 (one slot per stream); for each
--streams count of concurrent streaming chat requests of exactly --tokens tokens (temperature 0, ignore_eos),
the time to the first content chunk (TTFT) and tokens/s per stream and in total, against the same concurrency
on one-row generations (Engine.stream on threads, no HTTP: concurrent streams interleave one row per forward)
and on the server's Batcher without HTTP. --baseline-tree DIR also serves the nanowhale package of another
source tree (DIR/nanowhale, e.g. an older commit's, with its compiled module) and measures it in the same
rounds, so a change to the server is compared side by side under the same machine load; --http-only measures the
servers alone.
One keep-alive HTTP client (httpx) is shared by the streams, so connection setup is not timed. Medians over
--repeats; tokens per CPU second of the generating process (this one, or the server's) over all repeats.
--items 0 skips the evaluation part.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import socket
import subprocess
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

import nanowhale as nw
from nanowhale.generate import TextAssembler
from nanowhale.serve import Engine, Sampling
from nanowhale.serve.batcher import Batcher
from nanowhale.tasks import ModelScorer, make_task, run_task

MODEL = "bench"

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


@contextlib.contextmanager
def served(ckpt, slots: int, threads: int, tree: str | None = None):
    """`nanowhale serve` as its own process, as it is deployed (its clients are other processes), from the source
    tree `tree` (default: the nanowhale this benchmark imports); yields its URL and process id."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    if tree:
        env["PYTHONPATH"] = str(Path(tree).resolve())
    proc = subprocess.Popen([sys.executable, "-m", "nanowhale.cli", "serve", "--ckpt", str(ckpt), "--port", str(port),
                             "--model-name", MODEL, "--slots", str(slots)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nanowhale serve exited with status {proc.returncode}")
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def bench_server(run, tokens: int, repeats: int, counts: list[int], threads: int,
                 baseline: str | None = None, http_only: bool = False) -> list[str]:
    engine = Engine(run)
    model = MODEL

    def direct(streams):
        """The reference: one-row generations (Engine.stream) on threads, no HTTP."""
        results = [{} for _ in range(streams)]

        def one(i):
            t0 = time.perf_counter()
            first, n = None, 0
            for d in engine.chat([{"role": "user", "content": PROMPTS[i % 4]}],
                                 Sampling(max_tokens=tokens, temperature=0.0, ignore_eos=True)):
                if d.text and first is None:
                    first = time.perf_counter()
                n = d.tokens
            end = time.perf_counter()
            results[i].update(ttft=(first or end) - t0, seconds=end - t0, tokens=n)
        return _run_threads(one, streams, results)

    batcher = Batcher(engine, slots=max(counts))

    def batched(streams):
        """The server's batching without HTTP: each stream's tokens through the Batcher, turned into text."""
        results = [{} for _ in range(streams)]

        def one(i):
            s = Sampling(max_tokens=tokens, temperature=0.0, ignore_eos=True)
            ids, tokens_in = engine.chat_ids([{"role": "user", "content": PROMPTS[i % 4]}]), queue.SimpleQueue()
            text = TextAssembler(engine.tokenizer, engine.stop_tokens(s, True), s.stop)
            t0 = time.perf_counter()
            first, n = None, 0
            batcher.submit(ids, s, True, tokens_in.put)
            while not text.finished:
                d = text.feed(*tokens_in.get())
                if d and d.text and first is None:
                    first = time.perf_counter()
                n = d.tokens if d else n
            end = time.perf_counter()
            results[i].update(ttft=(first or end) - t0, seconds=end - t0, tokens=n)
        return _run_threads(one, streams, results)

    local = {} if http_only else {"direct": direct, "batched": batched}  # the paths measured in this process
    paths = {"direct": "one row per forward (no HTTP)", "batched": "batched (no HTTP)", "http": "batched, HTTP + SSE"}
    paths = {path: paths[path] for path in [*local, "http"]}
    trees = {"http": None}
    if baseline:
        paths["http baseline"] = f"batched, HTTP + SSE, baseline ({baseline})"
        trees["http baseline"] = baseline
    stats = {(n, path): [] for n in counts for path in paths}
    with contextlib.ExitStack() as stack:
        servers = {}
        for path, tree in trees.items():
            url, pid = stack.enter_context(served(run.checkpoint.dir, max(counts), threads, tree))
            # (connections idle while the other paths run are dropped before uvicorn's 5 s keep-alive closes them:
            # reusing one the server is closing gives "connection reset")
            client = stack.enter_context(httpx.Client(base_url=url, timeout=600,
                                                      limits=httpx.Limits(keepalive_expiry=2)))
            stream_once(client, model, PROMPTS[0], 2, {})  # connect and warm up
            servers[path] = client, pid
        # Repeats go round every configuration in turn, so a busy spell of the machine hits them all alike (the
        # servers in turn first and second).
        for repeat in range(repeats):
            for streams in counts:
                for path, measure in local.items():
                    stats[streams, path].append(_with_cpu(lambda: measure(streams), os.getpid()))
                for path, (client, pid) in list(servers.items())[:: -1 if repeat % 2 else 1]:
                    results = [{} for _ in range(streams)]
                    stats[streams, path].append(_with_cpu(lambda: _run_threads(
                        lambda i: stream_once(client, model, PROMPTS[i % 4], tokens, results[i]), streams, results),
                        pid))
    lines = ["| streams | path | TTFT median (s) | tokens/s per stream | tokens/s total | tokens per CPU second |",
             "|---:|---|---:|---:|---:|---:|"]
    for streams in counts:
        for path, name in paths.items():
            runs = stats[streams, path]
            ttft, per, total = (statistics.median(s[k] for s in runs) for k in range(3))
            per_cpu = sum(s[3] for s in runs) / max(sum(s[4] for s in runs), 1e-9)  # over all repeats: ticks of 10 ms
            lines.append(f"| {streams} | {name} | {ttft:.4f} | {per:.1f} | {total:.1f} | {per_cpu:.1f} |")
    return lines


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_cpu(measure, pid: int):
    """measure()'s (TTFT, per stream, total, tokens) and the CPU seconds that process `pid` (the one generating)
    spent meanwhile: on a shared machine the CPU time a token costs moves far less than the wall time."""
    cpu0 = _cpu_seconds(pid)
    ttft, per, total, tokens = measure()
    return ttft, per, total, tokens, _cpu_seconds(pid) - cpu0


def _run_threads(fn, n, results):
    """(median TTFT, median tokens/s per stream, total tokens/s, tokens) of n concurrent calls fn(i)."""
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return (statistics.median(r["ttft"] for r in results),
            statistics.median(r["tokens"] / r["seconds"] for r in results),
            sum(r["tokens"] for r in results) / wall, sum(r["tokens"] for r in results))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--gsm8k", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    ap.add_argument("--streams", default="1,4,16", help="concurrent stream counts, comma-separated")
    ap.add_argument("--baseline-tree", help="also serve DIR/nanowhale (another source tree) in the same rounds")
    ap.add_argument("--http-only", action="store_true", help="measure the servers only (shorter rounds)")
    args = ap.parse_args()
    if args.threads:
        nw.set_num_threads(args.threads)
    run = nw.load(args.ckpt)
    cfg = run.model.config
    print(f"checkpoint {run.checkpoint.dir}: {cfg.num_params() / 1e6:.1f}M params, seq_len {cfg.seq_len}, "
          f"{nw.get_num_threads()} threads, device {run.model.device}\n")
    if args.items:
        print("\n".join(bench_eval(run, args.items, args.gsm8k, args.repeats)) + "\n")
    print("\n".join(bench_server(run, args.tokens, args.repeats, [int(n) for n in args.streams.split(",")],
                                     args.threads, args.baseline_tree, args.http_only)))


if __name__ == "__main__":
    main()
