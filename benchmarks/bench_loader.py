"""Loader throughput (tokens/s) on shards of real text, beside the training step it feeds.

    python benchmarks/bench_loader.py --data ../shared/data/gutenberg --mb 50 --B 32 --T 2048

Tokenizes the text (a BPE trained on it), writes shards to a temp dir, then times the loader on two
corpora: whole books (documents far longer than a row: packing splits them across rows) and the same
books cut into ~paragraph-sized documents (packing fills rows by best fit). Then one forward+backward
of the `tiny` preset on the same machine, so the loader's share of a training step is one division.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import nanowhale as nw
from nanowhale.data import Tokenizer
from nanowhale.data.shards import Loader, write_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenizer import load_docs  # noqa: E402


def write_shards(tmp, name, ids, bos, vocab_size):
    paths = []
    for k, chunk in enumerate(np.array_split(np.arange(len(ids)), 4)):
        toks = np.concatenate([np.concatenate([[bos], ids[i]]) for i in chunk]).astype(np.int32)
        paths.append(f"{tmp}/{name}_{k:06d}.bin")
        write_shard(paths[-1], toks, vocab_size)
    return paths


def loader_tokens_per_s(paths, B, T, bos, vocab_size, packed, batches):
    loader = Loader(paths, B, T, bos_id=bos, vocab_size=vocab_size, packed=packed, seed=0)
    loader.next()
    t, n = time.perf_counter(), 0
    for _ in range(batches):
        b = loader.next()
        if b is None:
            break
        n += b.size
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/gutenberg")
    ap.add_argument("--mb", type=float, default=50)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=2048)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--train-steps", type=int, default=5, help="tiny forward+backward steps timed for comparison")
    args = ap.parse_args()
    docs, nbytes = load_docs(sorted(Path(args.data).glob("train-*.jsonl.gz")), args.mb * 1e6)
    tok = Tokenizer.train(docs, vocab_size=args.vocab)
    bos = tok.special_id("<|bos|>")
    corpora = {"whole books": docs, "paragraphs": [p for d in docs for p in d.split("\n\n\n") if p.strip()]}
    print(f"{nbytes / 1e6:.0f} MB text; B={args.B} T={args.T}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, texts in corpora.items():
            ids = tok.encode_batch(texts, num_threads=2)
            lengths = np.array([len(i) + 1 for i in ids])
            paths = write_shards(tmp, name.replace(" ", "_"), ids, bos, tok.vocab_size)
            print(f"{name}: {len(texts)} documents, {lengths.sum() / 1e6:.1f} M tokens, median "
                  f"{int(np.median(lengths)):,} tokens")
            for packed in (True, False):
                rate = loader_tokens_per_s(paths, args.B, args.T, bos, tok.vocab_size, packed, args.batches)
                print(f"  {'packed' if packed else 'sequential':10s} {rate / 1e6:8.1f} M tokens/s")
    cfg = nw.ModelConfig.preset("tiny")
    model = nw.Model(cfg, seed=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (8, cfg.seq_len + 1)).astype(np.int32)
    model.forward_backward(x[:, :-1], x[:, 1:])
    times = []
    for _ in range(args.train_steps):
        t = time.perf_counter()
        model.forward_backward(x[:, :-1], x[:, 1:])
        times.append(time.perf_counter() - t)
    rate = x.size / float(np.median(times))
    print(f"tiny forward+backward (8 x {cfg.seq_len}, {nw.get_num_threads()} threads): {rate:,.0f} tokens/s "
          "(median); the loader's share of a step is the ratio of the two rates")


if __name__ == "__main__":
    main()
