"""Shared test setup: Triton in its interpreter when there is no GPU, the specs folder, a test cache dir."""
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


@pytest.fixture
def specs_dir() -> Path:
    return SPECS


def pytest_configure(config):
    os.environ.setdefault("ALEXNETC_CACHE", str(ROOT / ".pytest_cache" / "alexnetc"))
