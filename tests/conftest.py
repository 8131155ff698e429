"""Shared test setup: Triton in its interpreter when there is no GPU, with every interpreted load and store
checked against the launch's tensors (tests/kernels/interpreter_bounds.py), the specs folder, a test cache
dir, and torch's thread count restored after every test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter. The variable must be set before any
# @triton.jit decorator runs (it is read there), i.e. before a test imports alexnetc.kernels.<op>.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from .kernels import interpreter_bounds

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


@pytest.fixture(autouse=True)
def _interpreter_bounds():
    """A test whose Triton launches (in the interpreter) touched memory outside their tensors fails, even
    where the code under test caught the error the access raised."""
    interpreter_bounds.take_violations()
    yield
    found = interpreter_bounds.take_violations()
    if found:
        pytest.fail("out-of-bounds accesses in Triton kernels:\n  " + "\n  ".join(map(str, found)), pytrace=False)


@pytest.fixture
def specs_dir() -> Path:
    return SPECS


def pytest_configure(config):
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        interpreter_bounds.install()
    os.environ.setdefault("ALEXNETC_CACHE", str(ROOT / ".pytest_cache" / "alexnetc"))
