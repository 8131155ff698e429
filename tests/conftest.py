"""Shared test setup: Triton in its interpreter when there is no GPU, the specs folder, a test cache dir,
and torch's thread count restored after every test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter. The variable must be set before any
# @triton.jit decorator runs (it is read there), i.e. before a test imports alexnetc.kernels.<op>.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


@pytest.fixture(autouse=True)
def _torch_threads():
    """A command run in-process (`alexnetc profile --threads 1`, ...) sets torch's thread count for the
    whole process; later tests must not inherit it: oneDNN's convolution weight gradients and ATen's
    channels-last batch-norm sums are split over the threads, so a test comparing an in-process run with
    a subprocess's (a resumed training) would compare two thread counts."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def specs_dir() -> Path:
    return SPECS


def pytest_configure(config):
    os.environ.setdefault("ALEXNETC_CACHE", str(ROOT / ".pytest_cache" / "alexnetc"))
