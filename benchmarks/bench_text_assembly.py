"""Per-token cost of turning a stream's tokens into text (nanowhale.generate.TextAssembler, as the server and the
chat REPL use it) against the answer's length.

    python benchmarks/bench_text_assembly.py --ckpt runs/X [--lengths 64,256,1024,4096] [--repeats 15]

The tokens are the checkpoint tokenizer's encoding of a text mixing ASCII with 2-, 3- and 4-byte characters
(so characters are split across tokens), fed one at a time as a generation produces them, with and without a
stop string. The time per token is this thread's CPU time (time.thread_time: the time the machine's other work
takes the core away is not counted), the minimum over --repeats.
Run it with PYTHONPATH set to another source tree to compare two versions.
"""

from __future__ import annotations

import argparse
import time

import nanowhale as nw
from nanowhale.generate import TextAssembler

TEXT = "def whale(x):\n    return x * 2  # \u00e9t\u00e9 \u65e5\u672c\u8a9e \U0001F433 na\u00efve caf\u00e9\n"


def per_token_us(tokenizer, ids: list[int], stop: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        text = TextAssembler(tokenizer, (), stop)
        t0 = time.thread_time()
        for i, t in enumerate(ids):
            text.feed([t], i == len(ids) - 1, False)
        best = min(best, time.thread_time() - t0)
    return 1e6 * best / len(ids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--lengths", default="64,256,1024,4096", help="answer lengths in tokens, comma-separated")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    tokenizer = nw.load(args.ckpt).tokenizer
    stream = tokenizer.encode(TEXT * 1000)
    print(f"nanowhale from {nw.__file__}\n")
    print("| answer tokens | CPU us per token | CPU us per token, 1 stop string |\n|---:|---:|---:|")
    for n in (int(x) for x in args.lengths.split(",")):
        ids = stream[:n]
        print(f"| {n} | {per_token_us(tokenizer, ids, [], args.repeats):.2f} | "
              f"{per_token_us(tokenizer, ids, ['never occurs'], args.repeats):.2f} |")


if __name__ == "__main__":
    main()
