"""Every module imports first thing in a fresh interpreter (the command line's path), despite nanowhale's
lazy package attributes; and building the parser loads neither NumPy nor the extension."""

import subprocess
import sys
from pathlib import Path

import pytest

import nanowhale

# The child starts beside the nanowhale this test imported (an installed package in CI, not the source tree).
PACKAGE_PARENT = Path(nanowhale.__file__).resolve().parent.parent

MODULES = ["nanowhale.checkpoint", "nanowhale.loaded", "nanowhale.trainer", "nanowhale.conversation",
           "nanowhale.posttrain.sft", "nanowhale.posttrain.dpo", "nanowhale.posttrain.rl"]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module):
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=PACKAGE_PARENT)
    assert r.returncode == 0, r.stderr[-2000:]


def test_package_attributes_still_reach_submodules_and_the_parser_stays_light():
    code = ("import sys; from nanowhale.cli import build_parser; build_parser(); "
            "assert 'numpy' not in sys.modules and 'nanowhale._C' not in sys.modules, 'parser imported heavy modules'; "
            "import nanowhale as nw; print(nw.data.shards.__name__, nw.generate.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE_PARENT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["nanowhale.data.shards", "nanowhale.generate"]
