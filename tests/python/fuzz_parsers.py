"""Seeded corruption fuzzer for every file nanowhale parses: token shards, .nwtok tokenizer files,
checkpoints (safetensors + meta.json) and TOML run configs.

    python tests/python/fuzz_parsers.py                          # 300 cases per format (what CI runs)
    python tests/python/fuzz_parsers.py --cases 20000 --format shard --seed 7    # a longer run
    python tests/python/fuzz_parsers.py --format nwtok --seed 7 --case 123 -v    # replay one case

Each case mutates a valid seed file (bit flips, interesting integers such as 2^63 over size fields,
truncation, splices; structured edits of JSON and TOML values; for checkpoints, with and without the
SHA-256s in meta.json regenerated) and runs the parser in a forked child, so a crash is seen as a crash.
A case passes when the parser accepts the file (and its invariants hold) or raises ValueError naming the
file or key. It fails on a signal (segfault, abort), a hang (--timeout, SIGALRM), any other exception, or a
ValueError that names neither. Failing inputs are kept under --keep (default: a temp directory) and the
replay command is printed. Exit status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # no thread pools in the process that forks
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

FORMATS = ("shard", "nwtok", "checkpoint", "config")
INTERESTING_INTS = (0, 1, 2, 7, 255, 256, 2**15, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1,
                    2**63, 2**64 - 1)
INTERESTING_JSON = (None, True, False, 0, -1, 1, 2**31, 2**63, 2**64, -2**63, 1e308, -0.0, 0.5, float("nan"),
                    float("inf"), "", "x", "F32", [], [1, 2], [-1], {}, {"a": 1})
INTERESTING_TOML = ("0", "-1", "1", "2147483648", "9223372036854775807", "-9223372036854775808", "1e308", "inf",
                    "nan", "-inf", "0.5", "true", '""', '"x"', "[]", "[1, 2]", '["a"]', "{a = 1}", "1.5e-300",
                    "99999999999999999999", "'swiglu'", '"S"', '"SLX"', "4096", "65536", "1048576")
EXIT_OK, EXIT_VALUE_ERROR, EXIT_OTHER, EXIT_UNNAMED = 0, 3, 4, 5


# ---------------------------------------------------------------- seed files (made in a separate process)

def make_seeds(d: Path) -> None:
    """Valid inputs of each format under d (run in a subprocess, so the fuzzing process never starts threads)."""
    import numpy as np

    import nanowhale as nw
    from nanowhale import checkpoint as ckpt
    from nanowhale.config import resolve, to_toml
    from nanowhale.data import default_special_tokens, train_tokenizer
    from nanowhale.data.shards import write_shard

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    stream = np.concatenate([np.concatenate([[0], rng.integers(1, 1000, rng.integers(1, 30))]) for _ in range(20)])
    write_shard(str(d / "train_000000.bin"), stream, 1000)
    write_shard(str(d / "wide.bin"), stream * 97, 100000)
    docs = [f"the {i} quick brown fox, jumps over {i * 7} lazy dogs.\n  Indented   text\t{i}" for i in range(100)]
    tok = train_tokenizer(docs, vocab_size=256 + 16 + 40, special_tokens=default_special_tokens(), num_threads=1)
    tok.save(str(d / "tokenizer.nwtok"))
    cfg = resolve(overrides=["model.vocab_size=64", "model.seq_len=16", "model.d_model=16", "model.n_layer=2",
                             "model.n_head=2", "model.n_kv_head=1", "model.head_dim=8", "model.dense_hidden=16",
                             "model.n_experts=4", "model.top_k=2", "model.expert_hidden=8",
                             "model.shared_hidden=8", "train.micro_batch=2", "train.batch_tokens=32",
                             "eval.tokens=16"])
    (d / "config.toml").write_text(to_toml(cfg.to_dict()))
    model = nw.Model(cfg.model_config(), seed=0)
    opt = nw.Optimizer(model, cfg.optimizer_config())
    ckpt.save(d / "checkpoints", 1, model, opt, {"config": cfg.to_dict(), "tokens": 64, "loader_state": [2, 0, 1],
                                                   "train_seconds": 1.5, "tokenizer": {"fingerprint": tok.fingerprint}},
              d / "tokenizer.nwtok")


# ---------------------------------------------------------------- mutations

def mutate_bytes(rng: random.Random, data: bytes, hot: int = 0) -> bytes:
    """1-3 byte-level edits; with `hot` > 0, half of them land in the first `hot` bytes (a header)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        span = hot if hot and rng.random() < 0.5 else max(len(b), 1)
        pos = rng.randrange(min(span, len(b))) if b else 0
        op = rng.randrange(8)
        if op == 0 and b:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op in (2, 3):  # an interesting integer over a size field, sometimes added to what is there
            width = 8 if op == 2 else 4
            pos -= pos % width if rng.random() < 0.7 else 0
            old = int.from_bytes(b[pos:pos + width].ljust(width, b"\0"), "little")
            v = rng.choice(INTERESTING_INTS)
            if rng.random() < 0.3:
                v = old + rng.choice((1, -1, 2**62, 2**63, 3 * 2**62, 2**31, 2**32))
            b[pos:pos + width] = (v % 2**(8 * width)).to_bytes(width, "little")
        elif op == 4:
            del b[pos:]
        elif op == 5:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif op == 6 and b:
            del b[pos:pos + rng.randint(1, 64)]
        elif b:
            chunk = b[pos:pos + rng.randint(1, 64)]
            at = rng.randrange(len(b) + 1)
            b[at:at] = chunk
    return bytes(b)


def mutate_json(rng: random.Random, obj):
    """A copy of a JSON value with one structural edit at a random node."""
    obj = json.loads(json.dumps(obj))
    nodes = [(None, None, obj)]
    stack = [obj]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            nodes.append((node, k, v))
            stack.append(v)
    parent, key, value = rng.choice(nodes[1:] or nodes)
    op = rng.randrange(5)
    if parent is None:
        return rng.choice(INTERESTING_JSON)
    if op == 0 and isinstance(parent, dict):
        del parent[key]
    elif op == 1 and isinstance(parent, dict):
        parent[key + rng.choice(("_", "x", ""))] = parent.pop(key) if rng.random() < 0.5 else rng.choice(INTERESTING_JSON)
    elif op == 2 and isinstance(value, int) and not isinstance(value, bool):
        parent[key] = value + rng.choice((1, -1, 8, -8, 2**32, 2**63, -value - 1))
    else:
        parent[key] = rng.choice(INTERESTING_JSON)
    return obj


def mutate_lines(rng: random.Random, text: bytes, numbers: bool) -> bytes:
    """Line edits: delete, duplicate, swap, replace a number or a value, insert non-UTF-8 bytes."""
    lines = text.split(b"\n")
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(lines))
        op = rng.randrange(6)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3 and numbers:
            lines[i] = re.sub(rb"-?\d+", lambda m: str(rng.choice(INTERESTING_INTS) * rng.choice((1, -1))).encode(),
                              lines[i], count=1)
        elif op == 3 and b"=" in lines[i]:
            lines[i] = lines[i].split(b"=")[0] + b"= " + rng.choice(INTERESTING_TOML).encode()
        elif op == 4:
            at = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:at] + rng.choice((b"\xff", b"\xc3", b"\x80\x80", b"\r", b"\0", b" ")) + lines[i][at:]
        else:
            return mutate_bytes(rng, b"\n".join(lines))
    return b"\n".join(lines)


def rewrite_safetensors_header(rng: random.Random, path: Path) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    text = json.dumps(mutate_json(rng, json.loads(raw[8:8 + n]))).encode()
    text += b" " * (-len(text) % 8) if rng.random() < 0.8 else b""
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def rehash(d: Path) -> None:
    """meta.json's sizes and SHA-256s made to match the files again (as a hand edit would)."""
    from nanowhale.data.sources import sha256_of

    try:
        meta = json.loads((d / "meta.json").read_text())
        for name in list(meta["files"]):
            if (d / name).exists():
                meta["files"][name] = {"bytes": (d / name).stat().st_size, "sha256": sha256_of(d / name)}
    except (ValueError, KeyError, TypeError, AttributeError):
        return
    (d / "meta.json").write_text(json.dumps(meta))


def make_case(fmt: str, rng: random.Random, seeds: Path, case_dir: Path) -> Path:
    """The mutated input of one case (a file, or a checkpoint directory) under case_dir."""
    if fmt == "shard":
        src = seeds / rng.choice(("train_000000.bin", "wide.bin"))
        out = case_dir / "train_000000.bin"
        out.write_bytes(mutate_bytes(rng, src.read_bytes(), hot=64))
    elif fmt == "nwtok":
        raw = (seeds / "tokenizer.nwtok").read_bytes()
        if rng.random() < 0.5:  # the old format (no checksum), so edits reach the line parser
            lines = raw.split(b"\n")
            raw = b"\n".join([b"nanowhale-tokenizer 1", *lines[1:-2]]) + b"\n"
        out = case_dir / "tokenizer.nwtok"
        out.write_bytes(mutate_lines(rng, raw, numbers=True) if rng.random() < 0.7 else mutate_bytes(rng, raw))
    elif fmt == "checkpoint":
        out = case_dir / "step_000001"
        shutil.copytree(seeds / "checkpoints" / "step_000001", out)
        target = rng.choice(("model.safetensors", "model.safetensors", "optimizer.safetensors", "meta.json",
                             "meta.json", "tokenizer.nwtok"))
        f = out / target
        if target == "meta.json" and rng.random() < 0.8:
            f.write_text(json.dumps(mutate_json(rng, json.loads(f.read_text()))))
        elif target.endswith(".safetensors") and rng.random() < 0.6:
            rewrite_safetensors_header(rng, f)
        else:
            f.write_bytes(mutate_bytes(rng, f.read_bytes(), hot=256))
        if target != "meta.json" and rng.random() < 0.7:
            rehash(out)
    else:
        out = case_dir / "config.toml"
        out.write_bytes(mutate_lines(rng, (seeds / "config.toml").read_bytes(), numbers=False))
    return out


# ---------------------------------------------------------------- what a child runs

def run_parser(fmt: str, path: Path, seeds: Path) -> None:
    """Parses `path` the way nanowhale would; raises on a broken invariant of an accepted file."""
    import numpy as np

    import nanowhale as nw
    from nanowhale.data import Tokenizer
    from nanowhale.data.shards import Loader, read_shard, read_shard_header

    if fmt == "shard":
        h = read_shard_header(str(path))
        tokens = read_shard(str(path))
        assert tokens.size == h["n_tokens"] == (path.stat().st_size - 64) // h["token_bytes"], "token count"
        assert tokens.size == 0 or 0 <= tokens.min() <= tokens.max() < h["vocab_size"], "ids outside the header vocab"
        for packed in (True, False):
            loader = Loader([str(path)], 2, 8, bos_id=0, vocab_size=100000, packed=packed)
            for _ in range(3):
                batch = loader.next()
                assert batch is None or (batch.shape == (2, 9) and batch.min() >= 0), "batch"
    elif fmt == "nwtok":
        tok = Tokenizer.load(str(path))
        text = "the 12 quick brown fox,\n  jumps\t over é"
        assert tok.decode(tok.encode(text)) == text, "round trip"
        dict(tok.special_tokens)
        assert tok.vocab_size == tok.n_ordinary + len(tok.special_tokens), "vocab size"
    elif fmt == "checkpoint":
        from nanowhale.checkpoint import open_checkpoint
        from nanowhale.config import RunConfig

        ck = open_checkpoint(path)
        cfg = RunConfig.from_dict(ck.config)
        model = nw.Model(cfg.model_config(), seed=1)
        ck.load_model(model)
        opt = nw.Optimizer(model, cfg.optimizer_config())
        ck.load_optimizer(model, opt)
        ck.resume_state()
        for n in model.parameter_names():
            assert model.get_param(n).dtype == np.float32, "dtype"
        Tokenizer.load(str(ck.verify("tokenizer.nwtok")))
    else:
        from nanowhale.config import resolve

        cfg = resolve(files=[str(path)])
        mc = cfg.model_config()
        cfg.optimizer_config().validate()
        if mc.num_params() < 2_000_000:
            nw.Model(mc, seed=0)


def names_its_input(fmt: str, message: str, path: Path) -> bool:
    if str(path) in message or path.name in message:
        return True
    return fmt == "config" and re.match(r"[\w.-]+: ", message) is not None  # "SECTION.KEY: problem"


def child(fmt: str, path: Path, seeds: Path, timeout: float) -> None:
    """Runs in the forked child; never returns."""
    code = EXIT_OTHER
    try:
        signal.alarm(max(1, int(timeout)))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = 8 << 30  # a runaway allocation fails fast instead of swapping the machine
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        run_parser(fmt, path, seeds)
        code = EXIT_OK
    except ValueError as e:
        code = EXIT_VALUE_ERROR if names_its_input(fmt, str(e), path) else EXIT_UNNAMED
        if code == EXIT_UNNAMED:
            print(f"ValueError naming neither the file nor a key: {e}", file=sys.stderr)
    except BaseException:  # noqa: BLE001 - any other exception is a finding
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_case(fmt: str, seed: int, index: int, seeds: Path, work: Path, timeout: float, verbose: bool):
    """(outcome, input path): outcome is 'accepted', 'rejected' or a failure description."""
    rng = random.Random(f"{fmt}:{seed}:{index}")
    case_dir = work / f"{fmt}-{seed}-{index}"
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir(parents=True)
    path = make_case(fmt, rng, seeds, case_dir)
    err = case_dir / "stderr.txt"
    pid = os.fork()
    if pid == 0:
        fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        if not verbose:
            os.dup2(fd, 1)
        child(fmt, path, seeds, timeout)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        outcome = f"hang (over {timeout:.0f} s)" if sig == signal.SIGALRM else f"crash ({signal.Signals(sig).name})"
    else:
        code = os.WEXITSTATUS(status)
        outcome = {EXIT_OK: "accepted", EXIT_VALUE_ERROR: "rejected", EXIT_UNNAMED: "ValueError names no file or key",
                   EXIT_OTHER: "wrong exception"}.get(code, f"exit status {code}")
    if verbose:
        print(err.read_text(), end="")
    return outcome, case_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", choices=(*FORMATS, "all"), default="all")
    ap.add_argument("--cases", type=int, default=300, help="cases per format")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case", type=int, help="replay only this case index")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--keep", help="directory for failing inputs (default: a new temp directory)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show each case's output")
    ap.add_argument("--make-seeds", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.make_seeds:
        make_seeds(Path(args.make_seeds))
        return 0
    import nanowhale.checkpoint  # noqa: F401 - imported once here, so each forked child starts at once
    import nanowhale.config  # noqa: F401
    import nanowhale.data  # noqa: F401

    root = Path(tempfile.mkdtemp(prefix="nanowhale-fuzz-"))
    keep = Path(args.keep) if args.keep else root / "failures"
    seeds = root / "seeds"
    subprocess.run([sys.executable, __file__, "--make-seeds", str(seeds)], check=True)
    work = root / "cases"
    failures = 0
    formats = FORMATS if args.format == "all" else (args.format,)
    for fmt in formats:
        counts: dict[str, int] = {}
        indices = [args.case] if args.case is not None else range(args.cases)
        for i in indices:
            outcome, case_dir = run_case(fmt, args.seed, i, seeds, work, args.timeout, args.verbose)
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome not in ("accepted", "rejected"):
                failures += 1
                dst = keep / case_dir.name
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(case_dir, dst)
                print(f"FAIL {fmt} case {i}: {outcome}; input and stderr kept in {dst}\n"
                      f"     replay: python {__file__} --format {fmt} --seed {args.seed} --case {i} -v\n"
                      + "".join(f"     | {line}\n" for line in (dst / "stderr.txt").read_text().splitlines()[-6:]))
            shutil.rmtree(case_dir, ignore_errors=True)
        print(f"{fmt:10s} seed {args.seed}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), flush=True)
    shutil.rmtree(root / "seeds", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    if not failures or args.keep:  # else the failing inputs are under root/failures
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
