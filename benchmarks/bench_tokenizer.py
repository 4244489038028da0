"""Tokenizer benchmark, side by side in one run: training time vs HuggingFace `tokenizers` (and rustbpe
when installed), encode throughput vs tiktoken built from the same ranks.

    python benchmarks/bench_tokenizer.py --data ../shared/data/gutenberg --train-mb 100 --vocab 32768
    python benchmarks/bench_tokenizer.py --runs-only --tokenizer data/tokenizer.nwtok --runs-mb 100

The last section encodes pathological inputs (one long run of spaces, newlines, one letter, "ab", and random
letters), which are single pre-tokenizer pieces: MB/s for nanowhale at --runs-mb and for both at --ref-mb
(median of 3), with a check that the ids are identical.
"""

import argparse
import gzip
import json
import os
import random
import statistics
import time
from pathlib import Path

from nanowhale.data import SPLIT_PATTERN, Tokenizer, default_special_tokens, to_tiktoken


def load_docs(files, max_bytes):
    docs, total = [], 0
    for f in files:
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line)["text"]
                docs.append(text)
                total += len(text.encode("utf-8"))
                if total >= max_bytes:
                    return docs, total
    return docs, total


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/gutenberg")
    ap.add_argument("--train-mb", type=float, default=100)
    ap.add_argument("--encode-mb", type=float, default=50)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--runs-only", action="store_true", help="only the pathological-input section")
    ap.add_argument("--tokenizer", help="a .nwtok file for --runs-only (else one is trained)")
    ap.add_argument("--runs-mb", type=float, default=16)
    ap.add_argument("--ref-mb", type=float, default=0.25, help="size for the side-by-side run with tiktoken")
    args = ap.parse_args()
    if args.runs_only:
        tok = Tokenizer.load(args.tokenizer) if args.tokenizer else Tokenizer.train(
            load_docs([Path(args.data) / "val.jsonl.gz"], 20e6)[0], vocab_size=args.vocab)
        return bench_runs(tok, args.runs_mb, args.ref_mb)
    data = Path(args.data)
    train_docs, train_bytes = load_docs(sorted(data.glob("train-*.jsonl.gz")), args.train_mb * 1e6)
    enc_docs, enc_bytes = load_docs([data / "val.jsonl.gz"], args.encode_mb * 1e6)
    print(f"train text {train_bytes / 1e6:.1f} MB ({len(train_docs)} docs); encode text {enc_bytes / 1e6:.1f} MB")

    print("\n== training, vocab", args.vocab, "threads", args.threads)
    tok, t = timed(lambda: Tokenizer.train(train_docs, vocab_size=args.vocab, num_threads=args.threads))
    print(f"nanowhale   {t:7.1f} s   (vocab {tok.vocab_size})")
    if not args.skip_hf:
        try:
            from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

            def hf_train():
                hf = HFTokenizer(models.BPE(byte_fallback=False))
                hf.pre_tokenizer = pre_tokenizers.Sequence([
                    pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ])
                hf.decoder = decoders.ByteLevel()
                trainer = trainers.BpeTrainer(vocab_size=args.vocab, show_progress=False, min_frequency=0,
                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                              special_tokens=default_special_tokens())
                hf.train_from_iterator(train_docs, trainer)
                return hf

            hf, t = timed(hf_train)
            print(f"tokenizers  {t:7.1f} s   (vocab {hf.get_vocab_size()}, RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'all')})")
        except ImportError:
            print("tokenizers  not installed")
        try:
            import rustbpe  # noqa: F401

            def rb_train():
                t = rustbpe.Tokenizer()
                t.train_from_iterator(iter(train_docs), args.vocab - len(default_special_tokens()), pattern=SPLIT_PATTERN)
                return t

            _, t = timed(rb_train)
            print(f"rustbpe     {t:7.1f} s")
        except ImportError:
            print("rustbpe     not installed")

    print("\n== encoding", f"{enc_bytes / 1e6:.1f} MB")
    import tiktoken  # noqa: F401

    enc = to_tiktoken(tok)
    big = "\n".join(enc_docs)
    for threads in (1, 2):
        ids, t = timed(lambda: tok.encode_array(big, num_threads=threads))
        print(f"nanowhale   {threads} thread(s), one text     {enc_bytes / 1e6 / t:7.1f} MB/s")
        batch, t = timed(lambda: tok.encode_batch(enc_docs, num_threads=threads))
        print(f"nanowhale   {threads} thread(s), batch of docs {enc_bytes / 1e6 / t:7.1f} MB/s")
    ref, t = timed(lambda: enc.encode_ordinary(big))
    print(f"tiktoken    1 thread,     one text     {enc_bytes / 1e6 / t:7.1f} MB/s")
    ref_batch, t = timed(lambda: enc.encode_ordinary_batch(enc_docs, num_threads=2))
    print(f"tiktoken    2 threads,    batch of docs {enc_bytes / 1e6 / t:7.1f} MB/s")
    print("identical ids:", ids.tolist() == ref and batch == ref_batch, f"({len(ref)} tokens,",
          f"{enc_bytes / len(ref):.2f} bytes/token)")
    bench_runs(tok, args.runs_mb, args.ref_mb)


def median_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        out, t = timed(fn)
        times.append(t)
    return out, statistics.median(times)


def bench_runs(tok, runs_mb, ref_mb):
    """Long runs are single pieces: a superlinear merge makes them a denial of service."""
    enc = to_tiktoken(tok)
    rng = random.Random(0)
    kinds = {"spaces": lambda n: " " * n, "newlines": lambda n: "\n" * n, "letter a": lambda n: "a" * n,
             "ab": lambda n: "ab" * (n // 2), "random letters": lambda n: "".join(rng.choices("abcdefgh", k=n))}
    print(f"\n== pathological runs: nanowhale at {runs_mb} MB; both at {ref_mb} MB (median of 3, MB/s)")
    for name, make in kinds.items():
        big, small = make(int(runs_mb * 1e6)), make(int(ref_mb * 1e6))
        _, t_big = median_time(lambda: tok.encode(big), 1 if runs_mb > 10 else 3)
        ids, t = median_time(lambda: tok.encode(small))
        ref, t_ref = median_time(lambda: enc.encode_ordinary(small))
        print(f"{name:15s} nanowhale {runs_mb / t_big:8.1f} MB/s | at {ref_mb} MB: nanowhale {ref_mb / t:8.1f}, "
              f"tiktoken {ref_mb / t_ref:8.2f} MB/s, identical ids: {ids == ref}")


if __name__ == "__main__":
    main()
