"""Tokenizer benchmark, side by side in one run: training time vs HuggingFace `tokenizers` (and rustbpe
when installed), encode throughput vs tiktoken built from the same ranks.

    python benchmarks/bench_tokenizer.py --data ../shared/data/gutenberg --train-mb 100 --vocab 32768
"""

import argparse
import gzip
import json
import os
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
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
