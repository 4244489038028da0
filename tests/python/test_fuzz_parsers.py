"""The seeded corruption fuzzer (fuzz_parsers.py) over every parser: a few hundred cases per format, each
in a forked child, so a crash, hang or wrong exception type fails the suite. A longer run:
`python tests/python/fuzz_parsers.py --cases 20000`."""

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).with_name("fuzz_parsers.py")
CASES = {"shard": 300, "nwtok": 300, "checkpoint": 200, "config": 200}


@pytest.mark.parametrize("fmt", CASES)
def test_fuzz(fmt):
    r = subprocess.run([sys.executable, str(FUZZ), "--format", fmt, "--cases", str(CASES[fmt]), "--seed", "0"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert " rejected" in r.stdout, r.stdout  # the mutations do reach the parser
