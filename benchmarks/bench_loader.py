"""Loader throughput (tokens/s) on shards of real text, packed and sequential.

    python benchmarks/bench_loader.py --data ../shared/data/gutenberg --mb 50 --B 32 --T 2048
Tokenizes the text (vocab 32768 trained on it), writes shards to a temp dir, then times the loader.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nanowhale.data import Tokenizer
from nanowhale.data.shards import Loader, write_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenizer import load_docs  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/gutenberg")
    ap.add_argument("--mb", type=float, default=50)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=2048)
    ap.add_argument("--batches", type=int, default=300)
    args = ap.parse_args()
    docs, nbytes = load_docs(sorted(Path(args.data).glob("train-*.jsonl.gz")), args.mb * 1e6)
    tok = Tokenizer.train(docs, vocab_size=32768)
    bos = tok.special_id("<|bos|>")
    # Gutenberg documents are whole books; split them into ~paragraph-sized documents of a few KB,
    # closer to web text, so packing has real work to do.
    pieces = [p for d in docs for p in d.split("\n\n\n") if p.strip()]
    ids = tok.encode_batch(pieces, num_threads=2)
    with tempfile.TemporaryDirectory() as tmp:
        paths, buf = [], []
        for k, chunk in enumerate(np.array_split(np.arange(len(ids)), 4)):
            toks = np.concatenate([np.concatenate([[bos], ids[i]]) for i in chunk]).astype(np.int32)
            paths.append(f"{tmp}/train_{k:06d}.bin")
            write_shard(paths[-1], toks, tok.vocab_size)
        print(f"{nbytes / 1e6:.0f} MB text, {len(pieces)} documents, "
              f"{sum(len(i) + 1 for i in ids) / 1e6:.1f} M tokens in 4 shards; B={args.B} T={args.T}")
        for packed in (True, False):
            loader = Loader(paths, args.B, args.T, bos_id=bos, vocab_size=tok.vocab_size, packed=packed, seed=0)
            loader.next()
            t, n = time.perf_counter(), 0
            for _ in range(args.batches):
                b = loader.next()
                if b is None:
                    break
                n += b.size
            dt = time.perf_counter() - t
            print(f"{'packed (best fit)' if packed else 'sequential':18s} {n / dt / 1e6:8.1f} M tokens/s")


if __name__ == "__main__":
    main()
