"""The research map's table of keys (nanowhale/research/onboard.py) covers exactly the keys an experiment
may set, for every preset."""

from pathlib import Path

import pytest

from nanowhale.config import defaults
from nanowhale.research.carry import HARNESS_KEYS, flat
from nanowhale.research.onboard import RANGES, editable_files

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset", ["tiny", "nanowhale-100m"])
def test_every_settable_key_has_a_range(preset):
    keys = set(flat(defaults(preset))) - HARNESS_KEYS
    assert keys - set(RANGES) == set(), "keys without a range in the map"
    assert set(RANGES) - keys == set(), "ranges of keys that do not exist"


def test_editable_files_say_what_they_are():
    files = dict(editable_files(REPO))
    assert files["csrc/model/model.cpp"].startswith("Forward and backward of the nanowhale MoE transformer")
    assert files["csrc/ops/attention.h"].startswith("Causal self-attention")
    assert all(files.values()) and "nanowhale/trainer.py" in files


def test_ranges_fit_in_a_markdown_table():
    assert not [k for k, r in RANGES.items() if "|" in r]
