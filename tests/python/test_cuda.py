"""GPU availability contract: GPU tests skip without a GPU, but NANOWHALE_REQUIRE_CUDA=1 makes a
missing or unusable GPU a failure."""

import os

import pytest

import nanowhale as nw


def test_cuda_required_means_cuda_works():
    if os.environ.get("NANOWHALE_REQUIRE_CUDA") == "1":
        assert nw.cuda_available(), "NANOWHALE_REQUIRE_CUDA=1 but no usable CUDA device (or a CPU-only build)"
    elif not nw.cuda_available():
        pytest.skip("no CUDA device")
